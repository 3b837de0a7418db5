"""What ``python -m behavior.<command> --help`` prints, and command-line values made safe for Hydra's grammar.

Hydra's own help lists every config group of ``conf/`` for every command, even for those that reject them, and
none of the key descriptions, which live as comments in the YAML files. The help here is built from those files:
the command's usage line and description (the first comment lines of ``conf/<command>.yaml``), the groups of
its own defaults list, and each key with its default and comment.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import yaml
from omegaconf import OmegaConf

WIDTH = 100
COLUMN = 30  # where descriptions start; a longer key=value puts its description on the next line
KEY_LINE = re.compile(r"(?P<key>[^\s#'\"-][^:#]*?|'[^']*'|\"[^\"]*\"):(?:\s|$)")


def split_comment(line: str) -> tuple[str, int, str]:
    """``line`` as (content, column of its trailing ``#``, comment text); -1 and "" without a comment.

    A ``#`` starts a comment at the line's start or after a space, outside quotes (YAML's rule)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"" and (i == 0 or line[i - 1] in " [{,:"):
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), i, line[i + 1:].strip()
    return line.rstrip(), -1, ""


def read_notes(path: Path) -> tuple[list[str], dict[str, str]]:
    """The leading comment lines of a YAML file and the description of each key, by dotted key.

    A key's description is its trailing comment, continued on comment-only lines whose ``#`` sits under the
    first one, after any comment lines right above the key. Entries of the defaults list are keyed
    ``defaults.<group>``."""
    header, notes, stack, above = [], {}, [], []
    last = None  # (dotted key, column of its '#') while the next comment-only line may continue it
    in_header = True
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            in_header, above, last = False, [], None
            continue
        if stripped.startswith("#"):
            text = stripped[1:].strip()
            if in_header:
                if not text.startswith("@package"):
                    header.append(text)
            elif last and indent == last[1]:
                notes[last[0]] += " " + text
            else:
                above.append(text)
                last = None
            continue
        in_header = False
        content, column, comment = split_comment(line)
        if stripped.startswith("-"):  # a list item: only the defaults list's entries are described
            entry = content.strip()[1:].strip().split(":")[0].strip()
            dotted = f"defaults.{entry}" if stack and stack[-1][1] == "defaults" else None
        else:
            match = KEY_LINE.match(content.strip() + " ")
            if not match:
                above, last = [], None
                continue
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match["key"].strip("'\"")))
            dotted = ".".join(key for _, key in stack)
        text = " ".join(above + ([comment] if comment else []))
        if dotted and text:
            notes[dotted] = text
        last = (dotted, column) if dotted and comment else None
        above = []
    return header, notes


def option_notes(conf: Path, group: str, option: str) -> tuple[list[str], dict[str, str]]:
    """:func:`read_notes` of ``conf/<group>/<option>.yaml``, its keys prefixed with the group, with the notes of
    the options it builds on (its own defaults list) underneath."""
    path = conf / group / f"{option}.yaml"
    header, own = read_notes(path)
    notes = {}
    for base in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("defaults", []):
        if isinstance(base, str) and base != "_self_":
            notes.update(option_notes(conf, group, base)[1])
    notes.update({f"{group}.{key}": text for key, text in own.items() if not key.startswith("defaults.")})
    return header, notes


def shown(value) -> str:
    """A default as it would be typed on the command line (YAML flow style)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return "[" + ", ".join(map(shown, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.items()) + "}"
    return str(value) if value != "" else "''"


def key_rows(node: dict, prefix: str, notes: dict[str, str]) -> list[tuple[str, str]]:
    """(``key=default``, description) for every key under ``node``, dotted.

    A described mapping that holds mappings (``bench.variants``) is one row naming its entries: their own keys
    say more in the YAML file than in a list of dotted names."""
    rows = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        note = notes.get(dotted, "")
        if isinstance(value, dict) and value:
            if note and any(isinstance(v, dict) for v in value.values()):
                rows.append((f"{dotted}={{{', '.join(map(str, value))}}}", note))
                continue
            if note:
                rows.append((dotted, note))
            rows.extend(key_rows(value, dotted + ".", notes))
        else:
            rows.append((f"{dotted}={shown(value)}", note))
    return rows


def two_columns(left: str, *texts: str) -> list[str]:
    """``left`` in the first column, each of ``texts`` wrapped as its own paragraph in the second."""
    lines = [line for text in texts if text for line in textwrap.wrap(text, WIDTH - COLUMN, break_on_hyphens=False)]
    heads = textwrap.wrap(left, WIDTH - 2, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
    if lines and len(heads) == 1 and len(left) + 4 <= COLUMN:
        return [heads[0].ljust(COLUMN) + lines[0]] + [" " * COLUMN + line for line in lines[1:]]
    return heads + [" " * COLUMN + line for line in lines]


def paragraph(text: str, indent: str = "", hanging: str | None = None) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent if hanging is None else hanging,
                         break_on_hyphens=False)


def command_groups(config: dict) -> list[tuple[str, str | None]]:
    """(group, default option or None) of a top-level config's defaults list, without ``hydra/`` and ``_self_``."""
    groups = []
    for entry in config.get("defaults", []):
        if isinstance(entry, dict):
            (group, option), = entry.items()
            if " " not in group and not group.startswith("hydra"):
                groups.append((group, option))
    return groups


def command_help(config_name: str) -> str:
    """The text of ``python -m behavior.<config_name> --help``: usage, description, the command's own groups and
    keys with their defaults and descriptions, read from ``conf/<config_name>.yaml`` and the options it uses."""
    from behavior.config import compose_config
    from behavior.paths import conf_dir

    conf = conf_dir()
    path = conf / f"{config_name}.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    header, notes = read_notes(path)
    composed = OmegaConf.to_container(compose_config(config_name, []), resolve=False)
    groups = command_groups(raw)
    usage = header[0] if header else f"python -m behavior.{config_name} [key=value ...]"
    out = paragraph(f"usage: {usage}", "", "    ") + [""]
    if header[1:]:
        out += paragraph(" ".join(header[1:])) + [""]

    if groups:
        out.append("Config groups (group=option; the default is shown):")
        for group, option in groups:
            options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
            about = f"options: {', '.join(options)}" + ("; none by default (null)" if option is None else "")
            out += two_columns(f"{group}={shown(option)}", about, notes.get(f"defaults.{group}", ""))
        out.append("")

    own = {key: composed[key] for key in raw if key not in ("defaults", "hydra") and key in composed
           and key not in dict(groups)}
    rows = key_rows(own, "", notes)
    run_dir = (raw.get("hydra") or {}).get("run", {}).get("dir")
    if run_dir and run_dir != ".":
        rows.append((f"hydra.run.dir={run_dir}", "the run folder, where this command writes its log, record of "
                                                  "settings (.hydra/) and results"))
    if rows:
        out.append("Keys (key=default):")
        for left, text in rows:
            out += two_columns(left, text)
        out.append("")

    for group, option in groups:
        if option is None or not isinstance(composed.get(group), dict):
            continue
        option_header, group_notes = option_notes(conf, group, option)
        for key, text in notes.items():  # the command's own words on a group key come after the option's
            if key.startswith(f"{group}."):
                group_notes[key] = f"{group_notes[key].rstrip('.')}. {text}" if key in group_notes else text
        out.append(f"Keys of {group}={option} (conf/{group}/{option}.yaml):")
        out += paragraph(" ".join(option_header), "  ")
        for left, text in key_rows(composed[group], f"{group}.", group_notes):
            out += two_columns(left, text)
        out.append("")

    example = next((key for key in ("input", "source") if key in composed), "data.root")
    out.append("Override any key as key=value; quote values with spaces or special characters:")
    out.append(f"  \"{example}='clips/café [1]'\"")
    out.append("Print the configuration these make with --cfg job.")
    return "\n".join(out) + "\n"


# Hydra flags whose next argument is their value, never an override
VALUE_FLAGS = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-c", "--cfg", "-p", "--package",
               "--experimental-rerun"}
OPENING = re.compile(r"[\[{]|[A-Za-z_]\w*\(")  # a list, a mapping or a function call starts the value


def parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_overrides([override])
    except HydraException:  # OverrideParseException included
        return False
    return True


def meant_as_text(value: str) -> bool:
    """Whether a value Hydra cannot read is plain text (a path, a name) rather than a broken piece of its grammar.

    Not text: a value already in quotes (its escaping is wrong), a list or mapping literal (``[1, 2`` or
    ``{a: 1``: one that does not close, or closes only at its end), a function call (``choice(a,b)``,
    ``range(1,3``, alike) and an interpolation OmegaConf cannot read (``${oops``): quoting would turn a typo into a
    string that fails later, far from the command line."""
    from omegaconf import grammar_parser
    from omegaconf.errors import GrammarParseError

    if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
        return False
    opening = OPENING.match(value)
    if opening:
        close = {"[": "]", "{": "}"}.get(opening[0], ")")
        if close not in value[opening.end():-1] or value.endswith(close):
            return False
    if "${" in value:
        try:
            grammar_parser.parse(value)
        except GrammarParseError:
            return False
    return True


def quote_override(override: str) -> str:
    """``override`` with its value in single quotes when Hydra cannot read it as typed but can once quoted and it
    is :func:`meant_as_text`; otherwise unchanged. See :func:`quote_overrides`."""
    key, equal, value = override.partition("=")
    if not equal or override.startswith(("-", "~")) or not meant_as_text(value) or parses(override):
        return override
    quoted = f"{key}={single_quoted(value)}"
    return quoted if parses(quoted) else override


def single_quoted(value: str) -> str:
    """``value`` in single quotes as Hydra reads them: ``'it\\'s'`` is it's, ``'C:\\\\'`` is C:\\."""
    from hydra.core.override_parser.types import Quote, QuotedString

    # with_quotes is the exact inverse of Hydra's un-escaping: \ before a quote (or the closing one) is doubled
    return QuotedString(text=value, quote=Quote.single).with_quotes()


def quote_overrides(overrides: list[str]) -> list[str]:
    """The command-line overrides with values Hydra's grammar rejects quoted, so they mean the text typed.

    ``input=clips/café``, ``input=~/clips``, ``input=clips/[a]/x.mp4``, ``output=a#b.csv``, ``input=it's.mp4``
    stop Hydra with a LexerNoViableAltException or a mismatched-input error; ``input='clips/café'`` is read as
    the path. The rule: a ``key=value`` (``+key=value``, ``++key=value``) whose value does not parse as typed,
    does once quoted, and is :func:`meant_as_text` is quoted; everything else is left as it is: values that
    parse (numbers, lists, interpolations, sweeps keep their meaning), ``~key`` deletions, flags and their
    arguments, and broken lists, mappings, quotes, function calls and interpolations (Hydra's error about them
    is the useful one; see :func:`override_hint`). Hydra's escapes in a value typed without quotes keep their
    meaning there: ``a\\\\b`` is ``a\\b`` and ``a\\,b`` is ``a,b``."""
    out, flag_value = [], False
    for arg in overrides:
        out.append(arg if flag_value else quote_override(arg))
        flag_value = arg in VALUE_FLAGS
    return out


def override_hint(override: str) -> str | None:
    """One line on how to fix an override that Hydra cannot read and quoting does not fix; None for one that
    parses (or is fixed by :func:`quote_override`)."""
    if parses(quote_override(override)):
        return None
    key, equal, value = override.partition("=")
    if not equal:
        return f"{override!r} is not key=value (or group=option); delete a key with ~key"
    if not parses(f"{key}=0"):
        return (f"{key!r} is not a key: use letters, digits, _ and - joined by dots (data.root), with + to add a key "
                "or ++ to add or replace one")
    if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
        return (f"inside {value[0]}...{value[0]}, write a quote of the same kind as \\{value[0]} and a backslash "
                f"before a quote as \\\\: {key}='it\\'s'")
    if value[:1] in ("[", "{"):
        return "a list is [a, b] and a mapping {k: v}: check the brackets and commas; quote the value to mean it " \
               f"as text: {key}={single_quoted(value)}"
    if OPENING.match(value) and OPENING.match(value)[0].endswith("("):
        return "sweep functions are choice, range, interval, glob, sort, shuffle, tag, int, float, str, bool, " \
               f"json_str; quote the value to mean it as text: {key}={single_quoted(value)}"
    if "${" in value:
        return "an interpolation reads ${other.key} or ${resolver:argument}; check its braces"
    return f"see Hydra's override grammar; quote the value to mean it as text: {key}='...'"
