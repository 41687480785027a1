#!/usr/bin/env python3
"""Runs the grpcurl examples of the docs verbatim and checks what they print.

    python3 clients/grpcurl/check_examples.py [--source FILE[:HEADING]]...

By default the examples come from docs/grpcurl-examples.md and, when README.md
has a section whose heading mentions grpcurl, from that section too: each
source runs in its own bash, every ```sh block verbatim and in order (so a
variable one block sets is there for the next), against a mesh already
running on the default ports (scripts/interop.sh starts one), or on the
ports PM_COMMAND_PORT, PM_QUERY_PORT and PM_RELAY_PORT name (the overrides
scripts/up.sh takes): `localhost:50051` and so on are rewritten to those.

The fenced block that follows a ```sh block (before the next ```sh block),
when its language is not sh, is the expected output of stdout and stderr
together. There, `<...>` stands for any value, a line `...` for any number of
lines, and an object entry `"...": "..."` for any further fields (an array
element "..." for any further elements). JSON is compared as JSON, everything
else line by line with runs of whitespace made one space. An expected output
whose first line is `ERROR:` means the command must exit non-zero; one
without any `ERROR:` line that it must exit 0. A block with no expected
output must exit 0; what it prints is not checked.

Prints one line per example and exits 1 if any example deviated.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)[^\n]*$")
SHELL_LANGS = {"sh", "bash", "shell", "console"}
PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")
TIMEOUT_SECONDS = 180
# The ports the examples name, and the variable that moves each (as for scripts/up.sh).
DEFAULT_PORTS = {"PM_COMMAND_PORT": "50051", "PM_QUERY_PORT": "50052", "PM_RELAY_PORT": "50053"}


@dataclass
class Example:
    source: str
    line: int
    command: str
    expected: str | None


def fenced_blocks(lines, start, end):
    """(line number, language, text) of each fenced block in lines[start:end]."""
    i = start
    while i < end:
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        body, j = [], i + 1
        while j < end and not re.match(r"^\s*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$", lines[j]):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        yield i + 1, lang, "\n".join(body)
        i = j + 1


def section_bounds(lines, heading_pattern):
    """[start, end) of the first section whose heading matches, or None."""
    in_fence = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            in_fence = not in_fence
        if in_fence:
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m and re.search(heading_pattern, m.group(2), re.IGNORECASE):
            level, j, in_fence2 = len(m.group(1)), i + 1, False
            while j < len(lines):
                if FENCE.match(lines[j]):
                    in_fence2 = not in_fence2
                n = None if in_fence2 else re.match(r"^(#{1,6})\s", lines[j])
                if n and len(n.group(1)) <= level:
                    break
                j += 1
            return i, j
    return None


def examples_of(path, heading=None):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    bounds = (0, len(lines)) if heading is None else section_bounds(lines, heading)
    if bounds is None:
        return []
    found = []
    for line, lang, text in fenced_blocks(lines, *bounds):
        if lang in SHELL_LANGS:
            found.append(Example(os.path.relpath(path, ROOT), line, text, None))
        elif found and found[-1].expected is None:
            found[-1].expected = text
    return found


# ---------------------------------------------------------------- comparison
def items(text):
    """The output as a list of ("json", value) and ("text", normalised line)."""
    decoder, out, pos, n = json.JSONDecoder(), [], 0, len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            break
        if text[pos] in "{[":
            try:
                value, end = decoder.raw_decode(text, pos)
                out.append(("json", value))
                pos = end
                continue
            except ValueError:
                pass
        eol = text.find("\n", pos)
        eol = n if eol < 0 else eol
        out.append(("text", " ".join(text[pos:eol].split())))
        pos = eol
    return out


def text_matches(expected, actual):
    pattern = "".join(
        ".+?" if PLACEHOLDER.fullmatch(part) else re.escape(part) for part in re.split(r"(<[^<>\s][^<>]*>)", expected)
    )
    return re.fullmatch(pattern, actual) is not None


def json_matches(expected, actual, path="$"):
    """None when actual fits expected, else a description of the first difference."""
    if isinstance(expected, str) and PLACEHOLDER.fullmatch(expected):
        if isinstance(actual, (dict, list)):
            return f"{path}: expected a value, got {json.dumps(actual)[:80]}"
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {json.dumps(actual)[:80]}"
        open_ended = expected.get("...") == "..."
        for key, value in expected.items():
            if key == "...":
                continue
            if key not in actual:
                return f"{path}: missing field {key!r}"
            difference = json_matches(value, actual[key], f"{path}.{key}")
            if difference:
                return difference
        extra = sorted(set(actual) - set(expected))
        if extra and not open_ended:
            return f"{path}: unexpected field(s) {extra}"
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected an array, got {json.dumps(actual)[:80]}"
        open_ended = bool(expected) and expected[-1] == "..."
        fixed = expected[:-1] if open_ended else expected
        if len(actual) < len(fixed) or (not open_ended and len(actual) != len(fixed)):
            return f"{path}: expected {len(fixed)}{'+' if open_ended else ''} elements, got {len(actual)}"
        for k, value in enumerate(fixed):
            difference = json_matches(value, actual[k], f"{path}[{k}]")
            if difference:
                return difference
        return None
    if expected != actual:
        return f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)}"
    return None


def item_difference(expected, actual):
    if expected[0] != actual[0]:
        return f"expected {expected[0]} {json.dumps(expected[1])[:80]}, got {actual[0]} {json.dumps(actual[1])[:80]}"
    if expected[0] == "json":
        return json_matches(expected[1], actual[1])
    if not text_matches(expected[1], actual[1]):
        return f"expected line {expected[1]!r}, got {actual[1]!r}"
    return None


def sequence_difference(expected, actual):
    """None when the item lists match (with `...` lines as wildcards), else why not."""
    best = ["output differs"]

    def walk(i, j):
        if i == len(expected):
            if j == len(actual):
                return True
            best[0] = f"unexpected extra output: {json.dumps(actual[j][1])[:120]}"
            return False
        if expected[i] == ("text", "..."):
            return any(walk(i + 1, k) for k in range(j, len(actual) + 1))
        if j == len(actual):
            best[0] = f"output ended; expected {json.dumps(expected[i][1])[:120]}"
            return False
        difference = item_difference(expected[i], actual[j])
        if difference:
            best[0] = difference
            return False
        return walk(i + 1, j + 1)

    return None if walk(0, 0) else best[0]


def check(example, output, code):
    if example.expected is None:
        return None if code == 0 else f"exit status {code} (expected 0)"
    expected = items(example.expected)
    error_lines = [k for k, item in enumerate(expected) if item == ("text", "ERROR:")]
    if error_lines and error_lines[0] == 0 and code == 0:
        return "exit status 0, but the expected output is an error"
    if not error_lines and code != 0:
        return f"exit status {code} (expected 0)"
    return sequence_difference(expected, items(output))


# ---------------------------------------------------------------- running
def with_ports(command):
    """The command with each default port replaced by its PM_*_PORT override, if any."""
    for variable, default in DEFAULT_PORTS.items():
        port = os.environ.get(variable) or default
        if port != default:
            command = re.sub(rf"\blocalhost:{default}\b", f"localhost:{port}", command)
    return command


def run(examples, workdir):
    """Runs the examples in one bash; returns [(output, exit status)]."""
    script = ["set +e"]
    for k, example in enumerate(examples):
        script.append(f"{{\n{with_ports(example.command)}\n}} >{workdir}/out.{k} 2>&1 </dev/null")
        script.append(f"echo $? >{workdir}/rc.{k}")
    # Background commands (a watch) write to their example's file until they end.
    script.append("wait")
    path = os.path.join(workdir, "examples.sh")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(script) + "\n")
    subprocess.run(["bash", "--noprofile", "--norc", path], cwd=workdir, timeout=TIMEOUT_SECONDS, check=False)
    results = []
    for k in range(len(examples)):
        try:
            with open(f"{workdir}/out.{k}", encoding="utf-8", errors="replace") as f:
                output = f.read()
            with open(f"{workdir}/rc.{k}", encoding="utf-8") as f:
                code = int(f.read().strip() or "1")
        except FileNotFoundError:
            output, code = "(not run: an earlier example ended the shell)", 1
        results.append((output, code))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        action="append",
        help="FILE or FILE:HEADING-REGEX (default: docs/grpcurl-examples.md and README.md:grpcurl)",
    )
    args = parser.parse_args()
    sources = args.source or ["docs/grpcurl-examples.md", "README.md:grpcurl"]

    passed = failed = 0
    for source in sources:
        path, _, heading = source.partition(":")
        path = os.path.join(ROOT, path)
        if not os.path.exists(path):
            print(f"FAIL  {source}: no such file")
            failed += 1
            continue
        examples = examples_of(path, heading or None)
        if not examples:
            if heading:
                print(f"skip  {source}: no grpcurl examples there")
                continue
            print(f"FAIL  {source}: no ```sh examples found")
            failed += 1
            continue
        with tempfile.TemporaryDirectory(prefix="grpcurl-examples-") as workdir:
            for example, (output, code) in zip(examples, run(examples, workdir)):
                first = example.command.strip().split("\n")[0]
                label = f"{example.source}:{example.line}: {first[:90]}{'...' if len(first) > 90 else ''}"
                difference = check(example, output, code)
                if difference is None:
                    passed += 1
                    print(f"ok    {label}")
                else:
                    failed += 1
                    print(f"FAIL  {label}\n      {difference}")
                    print("      output was:\n" + "\n".join("        " + line for line in output.rstrip().split("\n")))
    print(f"grpcurl examples: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
