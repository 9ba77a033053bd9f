"""Generates Python protobuf and gRPC modules from protos/ into a package
folder, with imports made relative so the modules live inside pyserver.protos.

usage: generate_protos.py PROTO_DIR OUT_DIR
"""

import pathlib
import re
import sys

from grpc_tools import protoc


def derive_v2_model_config(proto_dir: pathlib.Path, derived_dir: pathlib.Path) -> pathlib.Path:
    """The v2 API's ModelConfig is the v1 schema in package `inference` (same
    names and numbers): derive it from the one schema instead of keeping a copy."""
    derived_dir.mkdir(parents=True, exist_ok=True)
    text = (proto_dir / "model_config.proto").read_text()
    text = text.replace("package nvidia.inferenceserver;", "package inference;", 1)
    target = derived_dir / "v2_model_config.proto"
    target.write_text("// Generated at build time from protos/model_config.proto "
                      "(package inference).\n" + text)
    return target


def main() -> int:
    proto_dir, out_dir = (pathlib.Path(p).resolve() for p in sys.argv[1:3])
    out_dir.mkdir(parents=True, exist_ok=True)
    derived_dir = out_dir.parent / (out_dir.name + "_derived")
    protos = sorted(str(p) for p in proto_dir.glob("*.proto"))
    protos.append(str(derive_v2_model_config(proto_dir, derived_dir)))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{derived_dir}", f"-I{include}",
                      f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos])
    if rc != 0:
        return rc
    local = {pathlib.Path(p).stem + "_pb2" for p in protos}
    pattern = re.compile(r"^import (\w+_pb2)( as \w+)?$", re.M)
    for module in out_dir.glob("*_pb2*.py"):
        text = module.read_text()
        fixed = pattern.sub(
            lambda m: f"from . import {m.group(1)}{m.group(2) or ''}" if m.group(1) in local else m.group(0),
            text)
        module.write_text(fixed)
    (out_dir / "__init__.py").write_text('"""Modules generated from protos/ at build time."""\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
