#!/usr/bin/env python3
"""Regenerates tests/data/PROVIDER-provider-schema.json for each Terraform provider infra/ uses:
the arguments and blocks of every resource and data source type of that provider in infra/,
taken from the provider's schema as its PyPI package cdktn-provider-PROVIDER carries it (its
.jsii assembly lists each resource's config properties; the Terraform names are in each
property's docs anchor).

    scripts/update-provider-schemas.py [PROVIDER ...]     (default: all of PROVIDERS)

Run it after adding a resource type to infra/, or to move to another provider version
(PROVIDERS below). It needs pip and the package index; the tests need only its output.
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

# Provider -> the cdktn package version that carries its schema.
PROVIDERS = {
    "aws": "25.8.1",  # hashicorp/aws 6.69.1
    "tls": "14.1.1",  # hashicorp/tls 4.4.1
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def anchor(provider):
    return re.compile(rf"/{provider}/([0-9.]+)/docs/(resources|data-sources)/([a-z0-9_]+)#([a-z0-9_]+)")


def docs_text(prop):
    # The anchor is in the summary (aws) or in the remarks (tls).
    docs = prop.get("docs", {})
    return docs.get("summary", "") + "\n" + docs.get("remarks", "")


def used_types(provider):
    kinds = {"resource": set(), "data": set()}
    for path in glob.glob(os.path.join(ROOT, "infra", "**", "*.tf"), recursive=True):
        text = open(path).read()
        pattern = rf'^\s*(resource|data)\s+"({provider}_[a-z0-9_]+)"'
        for kind, name in re.findall(pattern, text, re.M):
            kinds[kind].add(name)
    return kinds


def load_assembly(provider, version, workdir):
    package = f"cdktn-provider-{provider}"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", workdir,
                    f"{package}=={version}"], check=True)
    wheel = glob.glob(os.path.join(workdir, f"cdktn_provider_{provider}-*.whl"))[0]
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


def struct_schema(types, fqn, pattern, depth=0):
    """Arguments of a struct: Terraform name -> {required, block (nested schema or null)}."""
    out = {}
    for prop in types[fqn].get("properties", []):
        m = pattern.search(docs_text(prop))
        name = m.group(4) if m else re.sub(r"([A-Z])", r"_\1", prop["name"]).lower()
        inner = struct_of(types, prop["type"])
        block = None
        if inner and inner in types and types[inner].get("datatype") and depth < 8:
            block = struct_schema(types, inner, pattern, depth + 1)
        out[name] = {"required": not prop.get("optional", False), "block": block}
    return dict(sorted(out.items()))


def update(provider, package_version):
    wanted = used_types(provider)
    pattern = anchor(provider)
    with tempfile.TemporaryDirectory() as workdir:
        assembly = load_assembly(provider, package_version, workdir)
    types = assembly["types"]
    found = {"resource": {}, "data": {}}
    version = None
    for fqn, t in types.items():
        # A resource's or data source's own config extends Terraform's meta-arguments; nested
        # blocks' structs (often also named ...Config) do not.
        if not (t.get("datatype") and "cdktn.TerraformMetaArguments" in t.get("interfaces", [])):
            continue
        for prop in t.get("properties", []):
            m = pattern.search(docs_text(prop))
            if not m:
                continue
            kind = "resource" if m.group(2) == "resources" else "data"
            name = f"{provider}_{m.group(3)}"
            if name in wanted[kind]:
                found[kind][name] = struct_schema(types, fqn, pattern)
                version = version or m.group(1)
            break
    missing = {k: sorted(wanted[k] - set(found[k])) for k in wanted}
    if any(missing.values()):
        sys.exit(f"not in provider {provider} {version}: {missing}")
    out = os.path.join(ROOT, "tests", "data", f"{provider}-provider-schema.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"provider": f"hashicorp/{provider}", "version": version,
                   "source": f"cdktn-provider-{provider} {package_version}",
                   "resources": dict(sorted(found["resource"].items())),
                   "data_sources": dict(sorted(found["data"].items()))}, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"wrote {out}: {len(found['resource'])} resources, {len(found['data'])} data sources, "
          f"provider {provider} {version}")


def main():
    for provider in sys.argv[1:] or PROVIDERS:
        if provider not in PROVIDERS:
            sys.exit(f"{provider}: not one of {', '.join(PROVIDERS)}")
        update(provider, PROVIDERS[provider])


if __name__ == "__main__":
    main()
