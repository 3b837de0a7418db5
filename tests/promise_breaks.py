"""The deliberate breaks of docs/reliability.md's promises, for ``tests/break_promises.py`` (issue 17).

Each :class:`Break` undoes one promise in one place: ``old`` (which must occur exactly once in ``file``) becomes
``new``, and each test of ``tests`` must then fail. A break that hangs relies on ``timeout`` (pytest-timeout's
per-test limit) to turn the hang into a failure. Data only: importing this runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

HANG = 60  # seconds: a test whose guard is broken sleeps an hour; this limit makes it fail instead


@dataclass(frozen=True)
class Break:
    name: str
    promise: str  # the row of docs/reliability.md
    file: str  # relative to the checkout
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids, each of which must fail under the break
    timeout: int = 300  # pytest --timeout for these tests


ATOMIC = "A kill at any moment leaves the old checkpoint or the new one, never a torn file"
CUT_OFF = "tests/test_engine.py::test_a_write_cut_off_midway_leaves_the_previous_checkpoint_whole[write_checkpoint]"
HOSTILE = "tests/test_pipeline.py::test_config_errors_are_one_line"
QUIET = "A report page that cannot be made, or a tracking tool that fails mid-run, costs one warning line"
WINDOW_RESUME = "A window-mode run killed part-way through a long video goes on from its last finished window"
WINDOW_KILLED = "tests/test_timeline.py::test_a_killed_window_run_goes_on_from_its_last_window_to_the_same_timeline"

BREAKS = [
    # Reports and tracking tools
    Break("report-failure-raises", QUIET, "behavior/report/run_report.py",
          "    except Exception as err:  # noqa: BLE001 - the metrics and checkpoints are written already\n",
          "    except ZeroDivisionError as err:\n",
          ("tests/test_run_report.py::test_a_page_that_cannot_be_made_costs_a_warning_not_the_run",)),
    Break("logger-failure-raises", QUIET, "behavior/engine/loggers.py",
          "            except Exception as err:\n                print(f\"warning: trainer.logger",
          "            except ZeroDivisionError as err:\n                print(f\"warning: trainer.logger",
          ("tests/test_loggers.py::test_a_logger_that_fails_mid_run_is_dropped_and_training_finishes",)),
    # Checkpoints
    Break("checkpoint-plain-open", ATOMIC, "behavior/engine/checkpoint.py",
          '    with atomic_open(path, "wb") as f:\n        torch.save(state, f)',
          '    with open(path, "wb") as f:\n        torch.save(state, f)', (CUT_OFF,)),
    Break("atomic-temp-left-on-error", ATOMIC, "behavior/atomic.py",
          "        Path(tmp).unlink(missing_ok=True)\n        raise", "        raise", (CUT_OFF,)),
    Break("atomic-copy-not-rename", ATOMIC, "behavior/atomic.py",
          "        os.replace(tmp, out)", "        __import__('shutil').copyfile(tmp, out)",
          ("tests/test_engine.py::test_checkpoint_round_trip_and_no_temp_files_left",)),
    Break("checkpoint-magic-unchecked", ATOMIC, "behavior/engine/checkpoint.py",
          '    if magic != b"PK\\x03\\x04":', "    if False:",
          ("tests/test_engine.py::test_checkpoint_errors_are_clear",)),
    Break("checkpoint-weights-only-false", "A checkpoint cannot run code", "behavior/engine/checkpoint.py",
          'torch.load(path, map_location="cpu", weights_only=True)',
          'torch.load(path, map_location="cpu", weights_only=False)',
          ("tests/test_engine.py::test_checkpoint_refuses_pickled_code",)),
    Break("resume-mismatch-unchecked", "A checkpoint of another model or class list is refused, saying what differs",
          "behavior/engine/trainer.py", "    if differs:\n", "    if False:\n",
          ("tests/test_engine.py::test_resume_refuses_another_model_or_class_list_and_says_what_differs",)),
    # Resume after a crash
    Break("resume-rng-not-restored", "trainer.resume=auto continues a run folder from its last finished epoch",
          "behavior/engine/trainer.py", '    torch.set_rng_state(state["rng_state"])\n', "    pass\n",
          ("tests/test_reliability.py::test_kill_9_mid_run_then_resume_auto_equals_the_uninterrupted_run",)),
    Break("nan-loss-unchecked", "The loss turning NaN stops the run before it poisons last.pt",
          "behavior/engine/loop.py", "        if not torch.isfinite(loss):", "        if False:",
          ("tests/test_engine.py::test_a_non_finite_loss_stops_training_with_a_clear_error",)),
    # Hostile and broken video
    Break("guard-timeout-ignored", "One clip cannot hang a run", "behavior/video/guard.py",
          "        self.job = (index, time.monotonic() + timeout)", '        self.job = (index, float("inf"))',
          ("tests/test_guard.py::test_prescan_lists_a_clip_that_hangs_the_decoder",), HANG),
    Break("guard-crash-stops-the-run", "One clip cannot crash a run", "behavior/video/guard.py",
          "                    except (EOFError, OSError):  # the worker died mid-job: a crash in native code\n",
          "                    except (EOFError, OSError):  # the worker died mid-job: a crash in native code\n"
          '                        raise RuntimeError("a decoder worker died")\n',
          ("tests/test_guard.py::test_hung_and_crashing_jobs_are_abandoned_and_the_rest_finish",), HANG),
    Break("predict-crash-stops-the-run", "One clip cannot crash a run", "behavior/engine/inference.py",
          "            if num_workers == 0 or not worker_lost(err):\n                raise",
          "            if True:\n                raise",
          ("tests/test_predict.py::test_a_crashing_decoder_costs_one_error_row",), HANG),
    Break("decode-open-errors-escape", "Any bytes give frames or a VideoDecodeError", "behavior/video/pyav_scan.py",
          "    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:\n        if _looks",
          "    except OSError as exc:\n        if _looks",
          ("tests/test_fuzz_decode.py::test_random_bytes_give_a_decode_error",)),
    Break("reader-errors-escape", "Any bytes give frames or a VideoDecodeError", "behavior/video/base.py",
          "        except Exception as exc:  # any backend failure on a bad file becomes one error type",
          "        except ZeroDivisionError as exc:",
          ("tests/test_fuzz_decode.py::test_short_guarded_fuzz_of_every_backend[decord]",
           "tests/test_fuzz_decode.py::test_short_guarded_fuzz_of_every_backend[torchcodec]")),
    Break("loader-timeout-ignored", "Decoding inside DataLoader workers is time-bounded",
          "behavior/data/timed_loader.py", '            kwargs["timeout"] = clip_timeout * batch_size',
          "            pass",
          ("tests/test_guard.py::test_a_clip_that_hangs_a_dataloader_worker_stops_the_epoch_naming_it",), HANG),
    Break("predict-timeout-ignored", "Decoding inside DataLoader workers is time-bounded",
          "behavior/engine/inference.py", "timeout=timeout * batch_size if timeout and num_workers > 0 else 0)",
          "timeout=0)", ("tests/test_predict.py::test_a_clip_that_hangs_the_decoder_costs_one_error_row",), HANG),
    Break("no-suite-timeout", "A hang fails its own test, not the whole CI run", "pyproject.toml",
          "timeout = 300\n", "",
          ("tests/test_timeouts.py::test_a_hanging_test_fails_by_name_instead_of_holding_the_suite",)),
    # Configuration
    Break("range-check-removed", "A wrong type, unknown key or out-of-range value stops before any work with one "
          "line naming the key", "behavior/engine/optim.py", '        check_number("optim.lr", self.lr, 0, above=True)',
          "        pass", (f"{HOSTILE}[optim.lr=-1-optim.lr]",)),
    Break("hydra-errors-not-one-line", "Misspelt keys, missing group options, unreadable overrides",
          "behavior/cli.py", "                message = override_error(config_name, args)",
          "                message = None",
          (f"{HOSTILE}[optim.lrr=1-optim.lrr is not a known key]",
           "tests/test_predict.py::test_bad_settings_are_one_line_and_exit_2[decode.timeot=5-decode.timeot is not a "
           "known key]")),
    Break("unknown-keys-dropped", "Every group has a typed schema, checked once", "behavior/config.py",
          "        check_keys(values, group, [f.name for f in fields(cls) if f.init])\n        return cls(**values)",
          "        names = {f.name for f in fields(cls) if f.init}\n"
          "        return cls(**{k: v for k, v in values.items() if k in names})",
          (f"{HOSTILE}[+data.foo=1-data.foo is not a known key]",)),
    # Determinism and outputs
    Break("init-unseeded", "Two CPU runs with one seed give identical metrics and predictions",
          "behavior/engine/trainer.py", "    torch.manual_seed(seed)\n", "    torch.seed()\n",
          ("tests/test_reliability.py::test_two_cpu_runs_with_one_seed_are_identical",)),
    Break("run-folder-refusal-removed", "A new run never trains over an earlier run's folder",
          "behavior/engine/training.py", "    if found:\n", "    if False:\n",
          ("tests/test_reliability.py::test_a_finished_run_is_never_trained_over",)),
    Break("run-folder-before-checks", "A refused command writes nothing", "behavior/cli.py",
          "                if prepare is not None:\n", "                if False:\n",
          ("tests/test_refusals.py::test_a_refused_train_leaves_a_finished_run_as_it_was",
           "tests/test_refusals.py::test_a_refused_evaluate_predict_or_live_touches_nothing")),
    Break("evaluate-into-given-folder", "Evaluate never writes into a training run", "behavior/evaluate.py",
          "    if not run_dir.is_dir() or not any(run_dir.iterdir()):", "    if True:",
          ("tests/test_refusals.py::test_evaluate_never_writes_into_a_training_run",)),
    Break("predict-opens-with-w", "Predict never truncates a file it did not create",
          "behavior/predict/predictions.py", 'open(self.path, "r+b"), False', 'open(self.path, "w+b"), False',
          ("tests/test_predict.py::test_foreign_output_is_refused_and_left_untouched",
           "tests/test_predict.py::test_other_columns_and_edited_files_are_refused")),
    # Regions of interest and live mode
    Break("no-face-not-said", "A clip without a face or person is still classified, and the report says so",
          "behavior/data/roi.py", '        if self.found or self.kind == "none":\n            return ""',
          '        if True:\n            return ""',
          ("tests/test_roi.py::test_a_clip_without_a_face_keeps_the_whole_frame_and_says_so",)),
    Break("no-face-half-frame", "A clip without a face or person is still classified, and the report says so",
          "behavior/data/roi.py", "    if region.box is None:\n        return frames\n",
          "    if region.box is None:\n        return frames[:, : frames.shape[1] // 2]\n",
          ("tests/test_roi.py::test_a_clip_without_a_face_keeps_the_whole_frame_and_says_so",)),
    Break("roi-csv-leaves-out-no-face", "A clip without a face or person is still classified, and the report says so",
          "behavior/data/roi.py", "        for clip, region in regions.items():\n            box =",
          "        for clip, region in [(c, r) for c, r in regions.items() if r.found]:\n            box =",
          ("tests/test_roi_pipeline.py::test_train_lists_every_region_and_stores_the_settings",)),
    Break("detector-error-not-caught", "A clip the detector cannot read does not stop training",
          "behavior/data/roi.py",
          "        except Exception as err:  # noqa: BLE001 - one clip's detection must not cost the run\n",
          "        except Exception as err:  # noqa: BLE001 - one clip's detection must not cost the run\n"
          "            raise\n", ("tests/test_roi.py::test_find_regions_survives_a_clip_it_cannot_read",)),
    Break("live-drops-frames-in-flight", "Ctrl-C or SIGTERM in live mode leaves a playable video with every frame "
          "read so far", "behavior/live/session.py",
          '    except KeyboardInterrupt:\n        stats.stopped = "interrupted"\n',
          '    except KeyboardInterrupt:\n        stats.stopped = "interrupted"\n'
          "        stats.seconds = time.perf_counter() - start\n        return stats\n",
          ("tests/test_live.py::test_interrupting_leaves_a_playable_file",)),
    Break("live-sigterm-ignored", "Ctrl-C or SIGTERM in live mode leaves a playable video with every frame read so "
          "far", "behavior/live/session.py",
          "STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)", "STOP_SIGNALS = (signal.SIGINT,)",
          ("tests/test_live.py::test_sigterm_stops_like_ctrl_c_keeping_every_frame_read",)),
    Break("live-not-fragmented", "A killed live run still leaves a playable video", "behavior/live/session.py",
          'fragmented=cfg.output.suffix.lower() == ".mp4",', "fragmented=False,",
          ("tests/test_live.py::test_a_killed_run_still_leaves_a_playable_file",)),
    Break("live-overwrites-output", "Live mode never overwrites a file", "behavior/live/session.py",
          "            if output.exists():\n", "            if False:\n",
          ("tests/test_live.py::test_an_existing_output_is_left_untouched",)),
    Break("no-display-is-an-error", "No display is not an error", "behavior/live/display.py",
          '            self._warn("no display (DISPLAY is not set)")\n            return',
          '            raise RuntimeError("no display (DISPLAY is not set)")',
          ("tests/test_live.py::test_show_without_a_display_warns_and_goes_on",)),
    # Provenance, logs and installs
    Break("predict-provenance-unchecked", "A predictions file never mixes two models' answers",
          "behavior/predict/predictions.py",
          "            recorded = self._check_provenance() if self.record is not None and not created else None",
          "            recorded = None",
          ("tests/test_predict.py::test_another_checkpoint_is_refused_in_one_line_touching_nothing",)),
    Break("predict-settings-unchecked", "A predictions file never mixes two models' answers",
          "behavior/predict/predictions.py",
          "        changed = [key for key in SETTING_KEYS if key in settings and settings[key] != ours[key]]",
          "        changed = []", ("tests/test_predict.py::test_another_setting_is_refused_naming_the_key",)),
    Break("report-without-checkpoint", "Every report says what produced it", "behavior/report/writer.py",
          "report_provenance(checkpoint, checkpoint_sha256, out)", "report_provenance(None, None, out)",
          ("tests/test_report.py::test_metrics_json_records_provenance",)),
    Break("report-without-git-commit", "Every report says what produced it", "behavior/provenance.py",
          '"git_commit": commit,', '"git_commit": None,',
          ("tests/test_report.py::test_metrics_json_records_provenance",)),
    Break("progress-bars-forced", "A log is readable", "behavior/progress.py",
          "        if enabled and on_terminal():", "        if enabled:",
          ("tests/test_progress.py::test_a_training_log_has_no_carriage_returns",)),
    Break("progress-lines-redrawn", "A log is readable", "behavior/progress.py",
          "              flush=True)\n        self._printed = self.count",
          '              end="\\r", flush=True)\n        self._printed = self.count',
          ("tests/test_progress.py::test_a_training_log_has_no_carriage_returns",)),
    # Long videos in window mode
    Break("window-worker-without-timeout", "Decoding inside DataLoader workers is time-bounded",
          "behavior/predict/window_stream.py", "timeout=timeout or 0, prefetch_factor=2",
          "timeout=0, prefetch_factor=2",
          ("tests/test_timeline.py::test_a_decoder_hanging_part_way_costs_an_error_row_and_keeps_the_windows_before",),
          timeout=HANG),
    Break("window-part-never-read", WINDOW_RESUME, "behavior/predict/partial_timeline.py",
          "        try:\n            text = self.path.read_text(",
          "        try:\n            return self\n            text = self.path.read_text(",
          (f"{WINDOW_KILLED}[after the third batch]", f"{WINDOW_KILLED}[mid-row]")),
    Break("window-part-torn-line-kept", WINDOW_RESUME, "behavior/predict/partial_timeline.py",
          'lines = text.split("\\n")[:-1]', 'lines = text.split("\\n")',
          (f"{WINDOW_KILLED}[mid-row]",)),
    Break("conf-groups-not-in-wheel", "The installed package runs anywhere and writes nothing into itself",
          "pyproject.toml", '"behavior.conf" = ["*.yaml", "*/*.yaml"]', '"behavior.conf" = ["*.yaml"]',
          ("tests/test_install.py::test_the_installed_package_trains_and_predicts_from_any_folder",)),
    Break("paths-relative-to-package", "The installed package runs anywhere and writes nothing into itself",
          "behavior/paths.py", "    return Path(os.path.abspath(Path(value).expanduser()))",
          "    return Path(os.path.abspath(PACKAGE / Path(value).expanduser()))",
          ("tests/test_install.py::test_the_installed_package_trains_and_predicts_from_any_folder",)),
]
