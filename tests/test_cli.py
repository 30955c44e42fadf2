"""The `keras-residual` command: quiet, usage errors instead of tracebacks, models, --version."""

import ast
import glob
import os
import subprocess
import sys
from importlib import metadata

import pytest

from keras_residual import cli, models

# The in-process tests are backend-neutral; the three that start a fresh interpreter
# (seconds each: Keras and the backend load) run on TensorFlow only.
multibackend = pytest.mark.multibackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(*args: str) -> subprocess.CompletedProcess:
    """The console script's launcher in a fresh interpreter, as a shell would run it."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command must quiet TensorFlow by itself
    return subprocess.run(
        [sys.executable, "-m", "keras_residual_cli", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )


@multibackend
def test_console_script_points_to_the_launcher():
    (script,) = [e for e in metadata.entry_points(group="console_scripts")
                 if e.name == "keras-residual"]
    assert script.value == "keras_residual_cli:main"


@multibackend
def test_summary_prints_only_the_table():
    result = run_command("summary", "mnist_resnet", "--blocks")
    assert result.returncode == 0, result.stderr
    # No TensorFlow / absl start-up lines, no warnings: nothing at all on stderr.
    assert result.stderr == ""
    out = result.stdout
    assert out.startswith("layer name  output size  mnist_resnet")
    assert "conv2_block1 (Residual)" in out and "  shortcut: identity" in out


@pytest.mark.backends("tensorflow", reason="a fresh process' stderr, which TensorFlow's native "
                      "start-up logs would spoil; the suggestions themselves are checked "
                      "in-process on every backend (test_bad_arguments_are_usage_errors)")
def test_unknown_model_is_a_usage_error_with_a_suggestion():
    result = run_command("summary", "resnet51")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "keras-residual summary: error: unknown model 'resnet51'; did you mean resnet50 or "
        "resnet18? "
        "see `keras-residual models` for the list"
    )
    assert "Traceback" not in result.stderr and "I0000" not in result.stderr


@pytest.mark.backends("tensorflow", reason="answers before Keras is imported: no backend runs")
def test_help_and_version_answer_without_loading_keras():
    code = (
        "import sys, keras_residual_cli\n"
        "for argv in (['--help'], ['--version'], ['summary', '--help']):\n"
        "    sys.argv = ['keras-residual', *argv]\n"
        "    try:\n"
        "        keras_residual_cli.main()\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, stop.code\n"
        "print('loaded keras:', 'keras' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"keras-residual {metadata.version('keras-residual')}\n" in out
    assert "models" in out and "list the model builders" in out
    # `summary --help`: every option described, with its default.
    assert "classifier outputs (None: the builder's) (default: None)" in " ".join(out.split())
    assert out.strip().endswith("loaded keras: False")


@multibackend
def test_models_lists_every_builder(capsys):
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines if line and not line.startswith("`")]
    assert listed == [*models.BUILDERS, *models.DEPTH_BUILDERS]
    assert list(models.DEPTH_BUILDERS) == [
        "cifar_resnet{depth}", "cifar_preact_resnet{depth}", "resnet{depth}_v2_paper"]
    assert any(line.startswith("resnet50 ") and "He et al. 2015" in line for line in lines)


@multibackend
@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "cifar_resnet21"], "cannot build 'cifar_resnet21': "),
        (["summary", "mnist_resnet", "--input-shape", "0,28,1"],
         "argument --input-shape: --input-shape takes positive integers"),
        (["summary", "mnist_resnet", "--classes", "-3"],
         "argument --classes: expected a positive integer. Received: '-3'"),
        (["summary", "cifar_resnet_20"], "did you mean cifar_resnet20?"),
        (["summary", "resnet50_v2_papr"], "did you mean resnet50_v2_paper?"),
        # Ties: difflib's similarity is 0.875 for both (2 * 7 matching characters / 16).
        (["summary", "resnet35"], "did you mean resnet34 or resnet50?"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@multibackend
def test_quiet_native_logs_drops_only_start_up_records(capfd):
    records = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796185684.943371    6567 port.cc:153] oneDNN custom operations are on.\n"
        "E0000 00:00:1796185697.630711    6567 cuda_platform.cc:52] failed call to cuInit\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild\n"
    )
    kept = "UserWarning: something real\nValueError: Received: x=1\n"
    with cli.quiet_native_logs():
        os.write(2, (records + kept).encode())
        print("to stdout")
    captured = capfd.readouterr()
    assert captured.err == kept
    assert captured.out == "to stdout\n"


# Every script's options, and the options the experiment scripts share.
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))
                 + glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
                 + [os.path.join(ROOT, "keras_residual", "experiments", "runner.py")])


@pytest.mark.backends("tensorflow", reason="reads source files; no backend runs")
@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_script_help_describes_every_option_with_its_default(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        where = f"{os.path.relpath(path, ROOT)}:{node.lineno}"
        if node.func.attr == "ArgumentParser":
            formatter = keywords.get("formatter_class")
            assert getattr(formatter, "attr", None) == "ArgumentDefaultsHelpFormatter", where
        if node.func.attr == "add_argument":
            text = keywords.get("help")
            assert text is not None and not (isinstance(text, ast.Constant) and not text.value), (
                f"{where}: option without a help text")


@pytest.mark.backends("tensorflow", reason="answers before Keras is imported: no backend runs")
def test_script_help_runs_and_shows_defaults():
    result = subprocess.run([sys.executable, os.path.join("examples", "demo.py"), "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--epochs EPOCHS training epochs of each CNN (default: 3)" in text
    assert "--out OUT output folder (default: demo_output)" in text
