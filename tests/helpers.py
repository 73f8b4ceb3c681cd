"""Small builders for test packages."""

import zipfile
from pathlib import Path

from hotload.pack import Packer


def class_def(name, superclass="Object", category="Pkg", ivars=""):
    return (
        f"{superclass} subclass: #{name}\n\tinstanceVariableNames: '{ivars}'\n\tclassVariableNames: ''\n"
        f"\tpoolDictionaries: ''\n\tcategory: '{category}'!\n\n"
    )


def method(class_name, source, protocol="demo"):
    return f"!{class_name} methodsFor: '{protocol}'!\n{source}! !\n\n"


def make_package(folder: Path, name: str, source: str, author="tester", **packer_options) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source_path = folder / f"{name}.st"
    source_path.write_text(source)
    return Packer(author=author, package_name=name, **packer_options).pack(source_path, folder).path


def add_member(mcz: Path, member: str, data: str):
    with zipfile.ZipFile(mcz, "a") as archive:
        archive.writestr(member, data)
