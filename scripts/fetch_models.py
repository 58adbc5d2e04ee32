#!/usr/bin/env python3
"""Put the models listed in models/manifest.toml into models/, verified by sha256.

Each file is linked from a local mirror directory when the mirror has it with the right
hash (CGBOT_MODEL_MIRROR, default ../shared/models), and downloaded from the manifest's
`source` URL otherwise. Only the default model is fetched unless names are given or --all.

    python3 scripts/fetch_models.py [--all] [NAME ...]
"""
import argparse
import hashlib
import os
import sys
import tempfile
import tomllib
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure(model, mirror):
    target = os.path.join(MODEL_DIR, model["file"])
    want = model["sha256"]
    if os.path.exists(target) and sha256_of(target) == want:
        return f"{model['name']}: {target} ok"
    candidate = os.path.join(mirror, model["file"])
    if os.path.isfile(candidate) and sha256_of(candidate) == want:
        if os.path.lexists(target):
            os.remove(target)
        os.symlink(os.path.abspath(candidate), target)
        return f"{model['name']}: linked {target} -> {os.path.abspath(candidate)}"
    url = model["source"]
    print(f"{model['name']}: downloading {url}", file=sys.stderr)
    with tempfile.NamedTemporaryFile(dir=MODEL_DIR, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    tmp.write(chunk)
        except OSError as err:
            os.unlink(tmp.name)
            sys.exit(f"{model['name']}: cannot download {url}: {err}\n"
                     f"  put {model['file']} (sha256 {want}) in a directory and set CGBOT_MODEL_MIRROR to it")
    got = sha256_of(tmp.name)
    if got != want:
        os.unlink(tmp.name)
        sys.exit(f"{model['name']}: {url} has sha256 {got}, expected {want}")
    if os.path.lexists(target):
        os.remove(target)
    os.rename(tmp.name, target)
    return f"{model['name']}: downloaded {target}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="model names (default: the default model)")
    parser.add_argument("--all", action="store_true", help="fetch every model in the manifest")
    args = parser.parse_args()
    with open(os.path.join(MODEL_DIR, "manifest.toml"), "rb") as f:
        models = tomllib.load(f)["model"]
    unknown = set(args.names) - {m["name"] for m in models}
    if unknown:
        sys.exit(f"unknown model(s) {', '.join(sorted(unknown))}; models/manifest.toml lists "
                 + ", ".join(m["name"] for m in models))
    chosen = [m for m in models if args.all or m["name"] in args.names
              or (not args.names and m.get("default"))]
    mirror = os.environ.get("CGBOT_MODEL_MIRROR", os.path.join(ROOT, "..", "shared", "models"))
    for model in chosen:
        if "recipe" in model:
            print(f"{model['name']}: made locally by `{model['recipe']}`, nothing to fetch")
            continue
        print(ensure(model, mirror))


if __name__ == "__main__":
    main()
