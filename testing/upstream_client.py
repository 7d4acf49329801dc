#!/usr/bin/env python3
"""An upstream OpenShell client against this project's gateway.

Python stubs are generated from upstream's own .proto files (vendored,
unchanged, in testing/upstream_proto/) with grpc_tools' protoc, so every
message is encoded and decoded exactly as an upstream client would. Then,
against the gateway at ENDPOINT, it creates a sandbox with a policy, reads
it back, updates the policy, waits (bounded) for the new revision to be
LOADED, lists the revisions, and sends policies with a field we do not
enforce. It prints one JSON object of what it saw; upstream_client_test.ts
asserts on it.

Usage:
  upstream_client.py --proto-dir DIR --out-dir DIR --endpoint HOST:PORT
                     [--ca FILE --cert FILE --key FILE] [--name NAME]

Exit status 0 with the JSON on stdout; 1 with one line on stderr when a step
fails unexpectedly (the JSON then carries "error" and what was seen so far).
"""

import argparse
import hashlib
import json
import os
import sys
import time

PROTOS = ["datamodel.proto", "sandbox.proto", "openshell.proto"]
# Bounds: every call, and the wait for LOADED.
CALL_TIMEOUT_S = 10
LOADED_TIMEOUT_S = 10
POLL_INTERVAL_S = 0.05


def generate(proto_dir, out_dir):
    """Python stubs of upstream's protos into out_dir (protoc + the gRPC plugin)."""
    import grpc_tools
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        "-I" + proto_dir,
        "-I" + include,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
    ] + [os.path.join(proto_dir, p) for p in PROTOS]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError("protoc failed with status %d for %s" % (code, proto_dir))
    sys.path.insert(0, out_dir)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--name", default="upstream-py")
    a = ap.parse_args()

    generate(a.proto_dir, a.out_dir)
    import grpc
    from google.protobuf.json_format import MessageToDict

    import openshell_pb2 as pb
    import openshell_pb2_grpc as pb_grpc
    import sandbox_pb2 as spb

    seen = {}

    def policy(rules):
        """SandboxPolicy with one rule per (name, host, port)."""
        p = spb.SandboxPolicy()
        for name, host, port in rules:
            p.network_policies[name].name = name
            p.network_policies[name].endpoints.add(host=host, port=port)
        return p

    def sha256(p):
        return hashlib.sha256(p.SerializeToString(deterministic=True)).hexdigest()

    def rejected(call, request):
        """The status of a call that must fail: [code name, details]."""
        try:
            call(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as e:
            return [e.code().name, e.details()]
        return ["OK", ""]

    def wait_loaded(version):
        """Polls GetSandboxPolicyStatus (bounded) until `version` is LOADED; what it saw last."""
        deadline = time.monotonic() + LOADED_TIMEOUT_S
        polls = 0
        while True:
            polls += 1
            st = stub.GetSandboxPolicyStatus(
                pb.GetSandboxPolicyStatusRequest(name=a.name, version=version),
                timeout=CALL_TIMEOUT_S,
            )
            status = pb.PolicyStatus.Name(st.revision.status)
            if status == "POLICY_STATUS_LOADED" or time.monotonic() > deadline:
                break
            time.sleep(POLL_INTERVAL_S)
        return {
            "version": st.revision.version,
            "status": status,
            "active_version": st.active_version,
            "policy_hash": st.revision.policy_hash,
            "loaded_at_ms": st.revision.loaded_at_ms,
            "polls": polls,
        }

    options = [("grpc.enable_http_proxy", 0)]
    if a.ca:
        with open(a.ca, "rb") as f:
            ca = f.read()
        cert = key = None
        if a.cert and a.key:
            with open(a.cert, "rb") as f:
                cert = f.read()
            with open(a.key, "rb") as f:
                key = f.read()
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
        channel = grpc.secure_channel(a.endpoint, creds, options=options)
    else:
        channel = grpc.insecure_channel(a.endpoint, options=options)

    try:
        stub = pb_grpc.OpenShellStub(channel)
        health = stub.Health(pb.HealthRequest(), timeout=CALL_TIMEOUT_S)
        seen["health"] = pb.ServiceStatus.Name(health.status)

        # Create with a policy (spec.policy = field 7, upstream's SandboxPolicy).
        p1 = policy([("pypi", "pypi.org", 443)])
        created = stub.CreateSandbox(
            pb.CreateSandboxRequest(name=a.name, spec=pb.SandboxSpec(policy=p1)),
            timeout=CALL_TIMEOUT_S,
        )
        seen["created"] = {"id": created.sandbox.id, "name": created.sandbox.name}
        seen["policy_v1_sha256"] = sha256(p1)

        seen["status_v1"] = wait_loaded(1)
        got = stub.GetSandbox(pb.GetSandboxRequest(name=a.name), timeout=CALL_TIMEOUT_S)
        seen["get_policy"] = MessageToDict(
            got.sandbox.spec.policy, preserving_proto_field_name=True
        )
        seen["get_policy_equal"] = got.sandbox.spec.policy == p1
        seen["get_current_policy_version"] = got.sandbox.current_policy_version

        # A new policy: two rules, one with a list of ports.
        p2 = policy([("pypi", "pypi.org", 443), ("files", "files.pythonhosted.org", 443)])
        p2.network_policies["files"].endpoints[0].ClearField("port")
        p2.network_policies["files"].endpoints[0].ports.extend([443, 8443])
        updated = stub.UpdateConfig(
            pb.UpdateConfigRequest(name=a.name, policy=p2), timeout=CALL_TIMEOUT_S
        )
        seen["update"] = {"version": updated.version, "policy_hash": updated.policy_hash}
        seen["policy_v2_sha256"] = sha256(p2)

        seen["status_v2"] = wait_loaded(updated.version)

        listed = stub.ListSandboxPolicies(
            pb.ListSandboxPoliciesRequest(name=a.name, limit=10), timeout=CALL_TIMEOUT_S
        )
        seen["revisions"] = [
            [r.version, pb.PolicyStatus.Name(r.status), r.policy_hash]
            for r in listed.revisions
        ]

        # A field we do not enforce: refused, naming the field.
        bad = policy([("pypi", "pypi.org", 443)])
        bad.network_policies["pypi"].endpoints[0].protocol = "rest"
        seen["create_unsupported"] = rejected(
            stub.CreateSandbox,
            pb.CreateSandboxRequest(name=a.name + "-bad", spec=pb.SandboxSpec(policy=bad)),
        )
        seen["update_unsupported"] = rejected(
            stub.UpdateConfig, pb.UpdateConfigRequest(name=a.name, policy=bad)
        )
        seen["update_global"] = rejected(
            stub.UpdateConfig, pb.UpdateConfigRequest(policy=p1, **{"global": True})
        )

        stub.DeleteSandbox(pb.DeleteSandboxRequest(name=a.name), timeout=CALL_TIMEOUT_S)
        seen["deleted"] = True
    except Exception as e:  # one line for the test's failure message
        seen["error"] = "%s: %s" % (type(e).__name__, e)
        print(json.dumps(seen))
        print("upstream_client: %s" % seen["error"].splitlines()[0], file=sys.stderr)
        return 1
    finally:
        channel.close()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
