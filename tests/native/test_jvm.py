"""native/jvm: the Java binding dev.udrl.Udrl over the C layer, built and run here, compared with the SDK."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import udrl
from udrl.model import default_model_path

NATIVE = Path(__file__).resolve().parents[2] / "native"
CHECK = Path(__file__).parent / "jvm" / "UdrlCheck.java"


def _jdk_missing() -> str | None:
    if not (shutil.which("javac") and shutil.which("java")):
        return "no JDK on this machine (javac/java not found); install openjdk-17-jdk-headless (.ci/run does)"
    home = Path(os.path.realpath(shutil.which("javac"))).parents[1]
    if not (Path(os.environ.get("JAVA_HOME", home)) / "include" / "jni.h").exists():
        return f"the JDK at {home} has no include/jni.h; install a full JDK or set JAVA_HOME"
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "no C compiler on this machine"
    return None


pytestmark = pytest.mark.skipif(_jdk_missing() is not None, reason=str(_jdk_missing()))


@pytest.fixture(scope="module")
def jvm_build(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("jvm") / "build"
    out = subprocess.run(["make", "-C", str(NATIVE), "jvm", f"BUILD={build}", f"PYTHON={sys.executable}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    classes = build / "check"
    done = subprocess.run(["javac", "-Xlint:all", "-Werror", "-cp", str(build / "jvm" / "classes"), "-d", str(classes),
                           str(CHECK)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return build


def _run(build: Path, model: Path, query: str, length: int) -> list[list[str]]:
    classpath = os.pathsep.join([str(build / "jvm" / "classes"), str(build / "check")])
    out = subprocess.run(["java", f"-Dudrl.jni={build / 'libudrl_jni.so'}", "-cp", classpath, "UdrlCheck",
                          str(model), query, str(length)], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return [line.split("\t") for line in out.stdout.decode("utf-8").splitlines()]


@pytest.mark.parametrize("query, length", [("poster for a summer jazz festival by the sea", 6),
                                           ("Café logo 🎷 for Zoë's bakery — naïve & bold", 4)])
def test_java_generates_what_the_sdk_generates_for_every_task(jvm_build, query, length):
    model = default_model_path()
    rows = _run(jvm_build, model, query, length)
    with udrl.load(model) as sdk:
        want = {task: sdk.generate(query, task=task, length=length).text for task in sdk.commands.tasks}
    got = {r[0]: r[1] for r in rows if r[0] in want}
    assert got == want
    for task, text in want.items():  # streaming hands out the same text, piece by piece
        assert [r[1:] for r in rows if r[0] == f"stream:{task}"] == [[text, text]]


def test_java_exceptions_carry_the_c_error_code(jvm_build):
    rows = {r[0]: r[1:] for r in _run(jvm_build, default_model_path(), "poster", 4)}
    assert rows["error"][0] == "4" and "unknown task 'video'" in rows["error"][1]  # UDRL_E_TASK
    assert rows["closed"] == ["1", "this model is closed"]  # UDRL_E_ARGUMENT
    assert rows["missing"][0] == "2" and "cannot open" in rows["missing"][1]  # UDRL_E_IO
