"""The README's promises stay true: CI runs its test command verbatim, every hook is documented."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_opens_with_the_two_commands():
    commands = _readme_commands()
    assert commands[0].endswith("mmbench run --posteriors moe,poe")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci_lines


def test_every_hook_has_a_docstring():
    from mmbench import hookspecs

    hooks = [getattr(hookspecs, n) for n in dir(hookspecs) if n.startswith("register_")]
    assert hooks and all(h.__doc__ and len(h.__doc__.strip()) > 20 for h in hooks)


def test_every_standard_posterior_has_a_row_in_the_models_table(plugins):
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("\n## Models"):readme.index("\n## ", readme.index("\n## Models") + 1)]
    standard = [n for n in plugins.posteriors.names() if plugins.posteriors.provenance(n).distribution == "mmbench"]
    assert {"moe", "poe", "mmvae-plus", "jmvae"} <= set(standard)
    missing = [n for n in standard if f"| `{n}` |" not in table]
    assert not missing, f"posteriors without a row in README.md's Models table: {missing}"
