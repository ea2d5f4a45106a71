"""Issue 10 acceptance: ECDSA P-256 with this machine's libcrypto, packed and run under
``litebox-pack run``. The 0F 05 pair inside OpenSSL's P-256 table must be left as it is (no
failures); with --no-data-guard it is patched and signatures fail again, which shows the test
can fail. Everything a program needs is packed (DT_NEEDED, key files via --include) and every
path is absolute, so the tests hold whether `run` shows the guest the host's files or not.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .test_run import ABIS, cli, native, under_run

OPENSSL = "/usr/bin/openssl"
ROUNDS = 1000
SIGNS = 100


@pytest.fixture(scope="module")
def ecdsa(build_sample: Callable[..., Path]) -> Path:
    return build_sample("ecdsa_p256.c", "dynamic", ["-lcrypto"])


def pack(tmp_path: Path, name: str, programs: list[str], *opts: str) -> tuple[Path, list[str]]:
    """The bundle, and the lines of pack's summary."""
    tar = tmp_path / f"{name}.tar"
    made = cli(["pack", *programs, "-o", str(tar), "--no-main-out", *opts], tmp_path)
    assert made.status == 0, made
    return tar, made.stderr.decode().splitlines()


@pytest.mark.parametrize("abi", ABIS)
def test_ecdsa_p256_under_run_never_fails(abi: str, ecdsa: Path, tmp_path: Path) -> None:
    assert native([str(ecdsa), str(ROUNDS)], tmp_path).stdout == b"failures 0 of 1000\n"
    tar, summary = pack(tmp_path, "ecdsa", [str(ecdsa)], "--abi", abi)
    # The summary says what was left alone, and where.
    assert [ln.split() for ln in summary if ln.startswith("data-in-code ")] == [
        ["data-in-code", "1"]
    ]
    assert "data-in-code, left as they are: /usr/lib/x86_64-linux-gnu/libcrypto.so.3 " in "\n".join(
        summary
    )
    audit = cli(["audit", str(tar), "--fail-on", "data-in-code"], tmp_path)
    assert audit.status == 3 and b"data-in-code 1" in audit.stdout, audit
    got, rep = under_run(tar, [str(ecdsa), str(ROUNDS)], tmp_path)
    assert (got.stdout, got.status) == (b"failures 0 of 1000\n", 0), got
    assert rep["abi"] == abi and rep["escapes"]["total"] == 0


def test_ecdsa_p256_fails_when_the_table_is_patched(ecdsa: Path, tmp_path: Path) -> None:
    """The negative control: upstream's behaviour corrupts the table (a few percent of the
    rounds fail; 1,000 rounds make a run without failures vanishingly unlikely)."""
    tar, _ = pack(tmp_path, "ecdsa-unguarded", [str(ecdsa)], "--no-data-guard")
    audit = cli(["audit", str(tar), "--fail-on", "data-in-code"], tmp_path)
    assert audit.status == 0 and b"data-in-code 0" in audit.stdout, audit
    got, _ = under_run(tar, [str(ecdsa), str(ROUNDS)], tmp_path)
    failures = int(got.stdout.split()[1])
    assert got.status == 1 and failures > 0, got


def test_openssl_dgst_p256_sign_and_verify_under_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    key, pub = data / "key.pem", data / "pub.pem"
    subprocess.run([OPENSSL, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    str(key)], check=True, timeout=60)  # fmt: skip
    subprocess.run([OPENSSL, "ec", "-in", str(key), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    for i in range(SIGNS):
        (data / f"msg{i}").write_bytes(f"message {i}\n".encode() * (i + 1))
        sign_one = [OPENSSL, "dgst", "-sha256", "-sign", str(key), "-out", str(data / f"sig{i}")]
        subprocess.run([*sign_one, str(data / f"msg{i}")], check=True, timeout=60)
    tools = [OPENSSL, "/bin/sh", "/usr/bin/seq", "/usr/bin/base64"]
    tar, _ = pack(tmp_path, "openssl", tools, "--include", f"{data}:data")
    loop = f"for i in $(/usr/bin/seq 0 {SIGNS - 1}); do "
    # Signing under run; every signature checked natively.
    sign = loop + (f"{OPENSSL} dgst -sha256 -sign /data/key.pem /data/msg$i "
                   "| /usr/bin/base64 -w0; echo; done")  # fmt: skip
    got, rep = under_run(tar, ["/bin/sh", "-c", sign], tmp_path)
    assert got.status == 0 and rep["escapes"]["total"] == 0, got
    sigs = got.stdout.decode().split("\n")[:-1]
    assert len(sigs) == SIGNS
    failed = []
    for i, text in enumerate(sigs):
        sig = tmp_path / "sig"
        sig.write_bytes(base64.b64decode(text))
        ok = native([OPENSSL, "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig),
                     str(data / f"msg{i}")], tmp_path)  # fmt: skip
        if ok.stdout != b"Verified OK\n":
            failed.append(i)
    assert failed == []
    # Verifying native signatures under run.
    verify = loop + (f"{OPENSSL} dgst -sha256 -verify /data/pub.pem -signature /data/sig$i "
                     "/data/msg$i; done")  # fmt: skip
    got, rep = under_run(tar, ["/bin/sh", "-c", verify], tmp_path)
    assert got.status == 0 and rep["escapes"]["total"] == 0, got
    assert got.stdout == b"Verified OK\n" * SIGNS
