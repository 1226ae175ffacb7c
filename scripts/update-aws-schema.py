#!/usr/bin/env python3
"""Regenerates tests/data/aws-provider-schema.json: the arguments and blocks of every AWS
resource and data source type that infra/ uses, taken from the AWS Terraform provider's schema as
the PyPI package cdktn-provider-aws carries it (its .jsii assembly lists each resource's config
properties; the Terraform names are in each property's docs anchor).

Run it after adding a resource type to infra/, or to move to another provider version
(CDKTN_PROVIDER_AWS below). It needs pip and the package index; the tests need only its output.
"""
import glob
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile

CDKTN_PROVIDER_AWS = "25.8.1"  # AWS provider 6.69.1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "aws-provider-schema.json")
ANCHOR = re.compile(r"/docs/(resources|data-sources)/([a-z0-9_]+)#([a-z0-9_]+)")


def used_types():
    kinds = {"resource": set(), "data": set()}
    for path in glob.glob(os.path.join(ROOT, "infra", "**", "*.tf"), recursive=True):
        text = open(path).read()
        for kind, name in re.findall(r'^\s*(resource|data)\s+"(aws_[a-z0-9_]+)"', text, re.M):
            kinds[kind].add(name)
    return kinds


def load_assembly(workdir):
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", workdir,
                    f"cdktn-provider-aws=={CDKTN_PROVIDER_AWS}"], check=True)
    wheel = glob.glob(os.path.join(workdir, "cdktn_provider_aws-*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        tgz = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
        z.extract(tgz, workdir)
    with tarfile.open(os.path.join(workdir, tgz)) as t:
        member = t.getmember("package/.jsii")
        return json.load(t.extractfile(member))


def struct_of(types, t):
    """The struct a property type holds (alone, in a list, or in a union with IResolvable)."""
    if "fqn" in t:
        return t["fqn"] if types.get(t["fqn"], {}).get("datatype") else None
    if "collection" in t:
        return struct_of(types, t["collection"]["elementtype"])
    for member in t.get("union", {}).get("types", []):
        found = struct_of(types, member)
        if found:
            return found
    return None


def struct_schema(types, fqn, depth=0):
    """Arguments of a struct: Terraform name -> {required, block (nested schema or null)}."""
    out = {}
    for prop in types[fqn].get("properties", []):
        m = ANCHOR.search(prop.get("docs", {}).get("summary", ""))
        name = m.group(3) if m else re.sub(r"([A-Z])", r"_\1", prop["name"]).lower()
        inner = struct_of(types, prop["type"])
        block = None
        if inner and inner in types and types[inner].get("datatype") and depth < 8:
            block = struct_schema(types, inner, depth + 1)
        out[name] = {"required": not prop.get("optional", False), "block": block}
    return dict(sorted(out.items()))


def main():
    wanted = used_types()
    with tempfile.TemporaryDirectory() as workdir:
        assembly = load_assembly(workdir)
    types = assembly["types"]
    found = {"resource": {}, "data": {}}
    version = None
    for fqn, t in types.items():
        # A resource's or data source's own config extends Terraform's meta-arguments; nested
        # blocks' structs (often also named ...Config) do not.
        if not (t.get("datatype") and "cdktn.TerraformMetaArguments" in t.get("interfaces", [])):
            continue
        for prop in t.get("properties", []):
            m = ANCHOR.search(prop.get("docs", {}).get("summary", ""))
            if not m:
                continue
            kind = "resource" if m.group(1) == "resources" else "data"
            name = "aws_" + m.group(2)
            if name in wanted[kind]:
                found[kind][name] = struct_schema(types, fqn)
                version = version or re.search(r"/aws/([0-9.]+)/docs", prop["docs"]["summary"]).group(1)
            break
    missing = {k: sorted(wanted[k] - set(found[k])) for k in wanted}
    if any(missing.values()):
        sys.exit(f"not in provider {version}: {missing}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"provider": "hashicorp/aws", "version": version,
                   "source": f"cdktn-provider-aws {CDKTN_PROVIDER_AWS}",
                   "resources": dict(sorted(found["resource"].items())),
                   "data_sources": dict(sorted(found["data"].items()))}, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"wrote {OUT}: {len(found['resource'])} resources, {len(found['data'])} data sources, provider {version}")


if __name__ == "__main__":
    main()
