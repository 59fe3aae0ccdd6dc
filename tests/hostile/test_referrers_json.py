"""The referrers index: pathological answers of a build-index, pathological descriptors sent to one.

The proxy and the agent's registry port read referrer pages from the build-index; whatever it
answers, the client gets a page of checked descriptors or ``503 UNAVAILABLE``, never a
traceback. The build-index refuses descriptors that are not what a proxy would send.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from tests.hostile.rig import call, huge_int, nested
from tests.hostile.test_json_everywhere import (  # noqa: F401
    ANSWERS,
    FakePeer,
    assert_no_traceback,
    fakes,
    registry_ports_on,
)
from tests.integration.registry_http import Registry
from tests.support import ServerProcess, tls_section

SUBJECT = "sha256:" + hashlib.sha256(b"subject").hexdigest()
GOOD = ('{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:' + "a" * 64
        + '", "size": 10, "artifactType": "application/x-sig"}')
# pages a lenient reader would take: each must be refused as a whole
PAGES = {
    **ANSWERS,
    "descriptor of the wrong shape": b'{"referrers": [{"digest": 7}], "next": null}',
    "a sha512 digest too short": b'{"referrers": [' + GOOD.replace("a" * 64, "a" * 60).replace(
        "sha256", "sha512").encode() + b'], "next": null}',
    "next of the wrong type": b'{"referrers": [], "next": 5}',
    "annotations nested": b'{"referrers": [' + GOOD[:-1].encode() + b', "annotations": ' + nested(900)
    + b"}], \"next\": null}",
    "size of 5000 digits": b'{"referrers": [' + GOOD.replace("10", huge_int(5000).decode()).encode()
    + b'], "next": null}',
}


def test_registry_ports_refuse_pathological_referrer_pages(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, fakes: Callable[..., FakePeer]  # noqa: F811
) -> None:
    pages = list(PAGES.values())

    def index(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        m = re.match(r"/referrers/hostile/a(\d+)/subjects/", path)
        if m:
            return 200, {}, pages[int(m.group(1))]
        return 200, {}, b'{"referrers": [' + GOOD.encode() + b'], "next": null}'

    fake = fakes(pki, "build-index", index)
    proxy, agent = registry_ports_on(servers, pki, tmp_path, fake.address)
    for reg in (Registry("127.0.0.1", proxy.port("registry")), Registry("127.0.0.1", agent.port("registry"))):
        for i, raw in enumerate(pages):
            reply = reg.request("GET", f"/v2/hostile/a{i}/referrers/{SUBJECT}")
            assert reply.status == 503 and reply.error_codes() == ["UNAVAILABLE"], (raw[:80], reply)
        reply = reg.request("GET", f"/v2/hostile/good/referrers/{SUBJECT}")
        assert reply.status == 200
        assert [d["digest"] for d in reply.json()["manifests"]] == ["sha256:" + "a" * 64]
    assert_no_traceback(proxy, agent)


def test_build_index_refuses_pathological_descriptors(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    index = servers.start("kraken-build-index", {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "build-index"),
        "buildindex": {"storage": str(tmp_path / "bi")},
    }, name="build-index")
    url = f"/referrers/hostile/r/subjects/{SUBJECT}"
    bodies = {
        **{name: raw for name, raw in ANSWERS.items() if name != "empty"},
        "unknown media type": GOOD.replace("vnd.oci.image.manifest.v1+json", "html").encode(),
        "extra field": GOOD[:-1].encode() + b', "urls": []}',
        "negative size": GOOD.replace('"size": 10', '"size": -1').encode(),
        "annotations of numbers": GOOD[:-1].encode() + b', "annotations": {"a": 1}}',
        "empty artifactType": GOOD.replace("application/x-sig", "").encode(),
    }
    for name, raw in bodies.items():
        status, body = call(pki, index.port("http"), "PUT", url, raw, role="proxy")
        assert status == 400, (name, status, str(body)[:200])
    for bad_subject in ("sha256:zz", "sha512:" + "0" * 64, "md5:00"):
        status, _ = call(pki, index.port("http"), "GET", f"/referrers/hostile/r/subjects/{bad_subject}",
                         role="proxy")
        assert status == 400, bad_subject
    status, body = call(pki, index.port("http"), "PUT", url, GOOD.encode(), role="proxy")
    assert status == 200, body
    status, body = call(pki, index.port("http"), "GET", url, role="agent")
    assert status == 200 and [d["digest"] for d in body["referrers"]] == ["sha256:" + "a" * 64]
    assert_no_traceback(index)
