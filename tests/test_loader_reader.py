"""The in-image loader reads real Monticello packages as the client does (GNU Smalltalk runs it)."""

import shutil

import pytest

from hotload.images.gst import Gst
from hotload.images.loader_sources import loader_files, st_string
from hotload.formats.mcz import read_mcz

pytestmark = pytest.mark.skipif(not shutil.which("gst"), reason="GNU Smalltalk is not installed (run .ci/install-system as root)")


def test_loader_and_client_agree_on_every_corpus_package(corpus):
    script = (
        f"(HLPlatform current fileNamesIn: {st_string(corpus)}) do: [ :name | | entry |\n"
        f"  entry := HLPackageEntry forFile: {st_string(str(corpus) + '/')} , name.\n"
        "  entry readWith: HLPlatform current.\n"
        "  Transcript showCr: 'counts ' , name , ' ' , entry packageName , ' ' ,\n"
        "    (entry definitions select: [ :d | d isMethodDefinition ]) size printString ]!\n"
    )
    output = Gst().run(script, files=loader_files("gst"))
    counts = {}
    for line in output.splitlines():
        if line.startswith("counts "):
            _, name, package, methods = line.split()
            counts[name] = (package, int(methods))
    assert len(counts) == 33
    for path in sorted(corpus.glob("*.mcz")):
        package = read_mcz(path)
        assert counts[path.name] == (package.name, len(package.snapshot.methods)), path.name
