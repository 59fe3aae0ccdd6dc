"""The referrers index (OCI 1.1): descriptors from manifests, the disk store, pages, forgetting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from kraken.agent.registry import AgentStorage
from kraken.buildindex.referrers import ReferrersAPI
from kraken.core.digest import Digest
from kraken.core.http import Router
from kraken.core.metrics import Metrics
from kraken.registry import manifests as mf
from kraken.registry import referrers as rf
from kraken.registry.api import RegistryResource
from kraken.registry.errors import RegistryError
from kraken.registry.referrerclient import ReferrerClient
from kraken.registry.referrerstore import LocalReferrers, ReferrerStore, TooManyReferrers
from kraken.registry.site import make_registry_site
from tests.unit.test_registry_api import FakeBlobs

SUBJECT = Digest.of_bytes(b"the subject manifest")
CONFIG = {"mediaType": "application/vnd.example.sbom", "digest": str(Digest.of_bytes(b"c")), "size": 1}


def _artifact(seed: str, artifact_type: str | None = None, annotations: dict[str, str] | None = None,
              subject: Digest = SUBJECT) -> tuple[bytes, Digest]:
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": CONFIG, "layers": [],
        "subject": {"mediaType": mf.OCI_MANIFEST, "digest": str(subject), "size": 20},
        "annotations": {"seed": seed, **(annotations or {})},
    }
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    body = json.dumps(doc).encode()
    return body, Digest.of_bytes(body)


def _entry(seed: str, artifact_type: str | None = None) -> dict[str, Any]:
    body, digest = _artifact(seed, artifact_type)
    return rf.descriptor(mf.parse_manifest(body), digest, len(body))


def test_descriptor_takes_artifact_type_else_config_media_type() -> None:
    body, digest = _artifact("a", "application/vnd.example.signature")
    entry = rf.descriptor(mf.parse_manifest(body), digest, len(body))
    assert entry == {"mediaType": mf.OCI_MANIFEST, "digest": str(digest), "size": len(body),
                     "artifactType": "application/vnd.example.signature", "annotations": {"seed": "a"}}
    plain = _entry("b")
    assert plain["artifactType"] == CONFIG["mediaType"]
    subject = {"mediaType": mf.OCI_MANIFEST, "digest": str(SUBJECT), "size": 1}
    index = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [],
                        "subject": subject}).encode()
    parsed = mf.parse_manifest(index)
    assert parsed.subject == str(SUBJECT)
    assert "artifactType" not in rf.descriptor(parsed, Digest.of_bytes(index), len(index))


def test_bad_referrer_fields_are_manifest_invalid() -> None:
    for extra in ({"artifactType": 7}, {"annotations": {"a": 1}}, {"annotations": []},
                  {"subject": {"digest": "sha256:nothex"}}, {"subject": "sha256:" + "0" * 64}):
        doc = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": CONFIG, "layers": [], **extra}
        with pytest.raises(RegistryError) as e:
            mf.parse_manifest(json.dumps(doc).encode())
        assert e.value.code == "MANIFEST_INVALID", extra


def test_store_add_page_filter_and_remove(tmp_path: Path) -> None:
    store = ReferrerStore(tmp_path)
    a, b = _entry("a", "application/x-sig"), _entry("b", "application/x-sbom")
    store.add("test/repo", SUBJECT, a)
    store.add("test/repo", SUBJECT, b)
    store.add("test/repo", SUBJECT, a)  # idempotent
    page, following = store.page("test/repo", SUBJECT, None, None)
    assert page == sorted([a, b], key=lambda e: e["digest"]) and following is None
    assert store.page("test/repo", SUBJECT, "application/x-sig", None) == ([a], None)
    assert store.page("test/other", SUBJECT, None, None) == ([], None)
    assert store.page("test/repo", Digest.of_bytes(b"unknown"), None, None) == ([], None)
    assert store.remove("test/repo", SUBJECT, Digest.parse(a["digest"])) is True
    assert store.remove("test/repo", SUBJECT, Digest.parse(a["digest"])) is False
    assert store.page("test/repo", SUBJECT, None, None) == ([b], None)
    # a new store over the same directory reads what was acknowledged
    assert ReferrerStore(tmp_path).page("test/repo", SUBJECT, None, None) == ([b], None)


def test_store_refuses_bad_descriptors_and_skips_damaged_files(tmp_path: Path) -> None:
    store = ReferrerStore(tmp_path)
    good = _entry("good")
    for bad in ({**good, "size": -1}, {**good, "digest": "md5:00"}, {**good, "mediaType": "text/plain"},
                {**good, "surprise": 1}, {**good, "annotations": {"k": 2}}, [good]):
        with pytest.raises(ValueError):
            store.add("test/repo", SUBJECT, bad)  # type: ignore[arg-type]
    store.add("test/repo", SUBJECT, good)
    damaged = tmp_path / "test/repo/_subjects" / str(SUBJECT) / str(Digest.of_bytes(b"x"))
    damaged.write_bytes(b'{"mediaType": "app')
    assert store.page("test/repo", SUBJECT, None, None) == ([good], None)


def test_store_limit(tmp_path: Path) -> None:
    store = ReferrerStore(tmp_path, limit=2)
    store.add("r", SUBJECT, _entry("1"))
    store.add("r", SUBJECT, _entry("2"))
    store.add("r", SUBJECT, _entry("1"))  # replacing an entry is not a new one
    with pytest.raises(TooManyReferrers):
        store.add("r", SUBJECT, _entry("3"))
    with pytest.raises(RegistryError) as e:
        LocalReferrers(store).add("r", SUBJECT, _entry("3"))
    assert e.value.status == 403


def test_pages_by_count_and_size() -> None:
    entries = [{"mediaType": mf.OCI_MANIFEST, "digest": str(Digest.of_bytes(str(i).encode())), "size": 1}
               for i in range(rf.PAGE_ENTRIES + 5)]
    first, following = rf.select(entries, None, None)
    assert len(first) == rf.PAGE_ENTRIES and following == first[-1]["digest"]
    rest, end = rf.select(entries, None, following)
    assert len(rest) == 5 and end is None
    big = [{**e, "annotations": {"x": "y" * (rf.PAGE_BYTES // 3)}} for e in entries[:4]]
    page, following = rf.select(big, None, None)
    assert len(page) == 2 and following is not None


def test_forget_manifest_removes_only_its_entry(tmp_path: Path) -> None:
    """The call a manifest DELETE makes: the deleted referrer leaves the index, nothing else does."""
    index = LocalReferrers(ReferrerStore(tmp_path))
    body_a, digest_a = _artifact("a")
    body_b, digest_b = _artifact("b")
    for body, digest in ((body_a, digest_a), (body_b, digest_b)):
        index.add("test/repo", SUBJECT, rf.descriptor(mf.parse_manifest(body), digest, len(body)))
    done: list[Any] = []
    rf.forget_manifest(index, "test/repo", digest_a, body_a).addCallback(done.append)
    assert done
    page, _ = index.store.page("test/repo", SUBJECT, None, None)
    assert [e["digest"] for e in page] == [str(digest_b)]
    # a manifest without a subject, or not a manifest at all, has nothing to forget
    plain = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": CONFIG,
                        "layers": []}).encode()
    for body in (plain, b"not json"):
        rf.forget_manifest(index, "test/repo", Digest.of_bytes(body), body).addCallback(done.append)
    assert len(done) == 3
    assert [e["digest"] for e in index.store.page("test/repo", SUBJECT, None, None)[0]] == [str(digest_b)]
    rf.forget_manifest(index, "test/repo", digest_b, body_b)
    assert index.store.page("test/repo", SUBJECT, None, None) == ([], None)
    assert not (tmp_path / "test/repo/_subjects" / str(SUBJECT)).exists()


class PagedIndex:
    """A ReferrerIndex that answers two pages and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Digest, str | None, str | None]] = []

    def add(self, repo: str, subject: Digest, entry: dict[str, Any]) -> Deferred[Any]:
        return succeed(None)

    def remove(self, repo: str, subject: Digest, digest: Digest) -> Deferred[Any]:
        return succeed(None)

    def page(self, repo: str, subject: Digest, artifact_type: str | None,
             last: str | None) -> Deferred[tuple[list[dict[str, Any]], str | None]]:
        self.asked.append((repo, subject, artifact_type, last))
        first = _entry("first", "application/x-sig")
        return succeed(([first], first["digest"]) if last is None else ([], None))


@pytest_twisted.ensureDeferred
async def test_registry_api_pages_with_a_link_and_answers_head(tmp_path: Path) -> None:
    index = PagedIndex()
    api = RegistryResource(AgentStorage(FakeBlobs(tmp_path), None), None, Metrics("r1"), referrers=index)
    port = reactor.listenTCP(0, make_registry_site(api, Metrics("r1b")), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}/v2/test/x/referrers/{SUBJECT}"
    try:
        response = await treq.get(f"{base}?artifactType=application/x-sig", persistent=False)
        body = json.loads(await response.content())
        assert response.code == 200 and len(body["manifests"]) == 1
        link = response.headers.getRawHeaders("link")[0]
        assert link.startswith(f"</v2/test/x/referrers/{SUBJECT}?") and link.endswith('>; rel="next"')
        following = link[1:link.index(">")]
        assert "artifactType=application%2Fx-sig" in following
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}{following}", persistent=False)
        assert json.loads(await response.content())["manifests"] == []
        assert response.headers.getRawHeaders("link") is None
        assert index.asked[-1][2:] == ("application/x-sig", body["manifests"][0]["digest"])
        head = await treq.head(base, persistent=False)
        assert head.code == 200 and await head.content() == b""
        assert head.headers.getRawHeaders("content-type") == [mf.OCI_INDEX]
        bad = await treq.get(f"{base}?last=nonsense", persistent=False)
        assert bad.code == 400 and b"DIGEST_INVALID" in await bad.content()
        # without an index (an agent with no build-index) there is no referrers API
        plain = RegistryResource(AgentStorage(FakeBlobs(tmp_path), None), None, Metrics("r2"))
        other = reactor.listenTCP(0, make_registry_site(plain, Metrics("r2b")), interface="127.0.0.1")
        try:
            response = await treq.get(f"http://127.0.0.1:{other.getHost().port}/v2/test/x/referrers/{SUBJECT}",
                                      persistent=False)
            assert response.code == 404 and b"UNSUPPORTED" in await response.content()
        finally:
            await other.stopListening()
    finally:
        await port.stopListening()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
descriptor_like = st.fixed_dictionaries(
    {"mediaType": st.sampled_from([mf.OCI_MANIFEST, mf.OCI_INDEX, "text/plain"]) | json_values,
     "digest": st.sampled_from([str(SUBJECT), str(Digest.of_bytes(b"x", "sha512")), "sha256:zz"])
     | json_values,
     "size": st.integers(-5, 2**64) | json_values},
    optional={"artifactType": json_values | st.text(max_size=10), "annotations": json_values,
              "other": json_values},
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, descriptor_like))
def test_any_json_is_a_descriptor_or_a_value_error(raw: Any) -> None:
    """What a build-index is sent, or answers, is checked before use: a descriptor or ValueError."""
    try:
        entry = rf.check_descriptor(raw)
    except ValueError:
        return
    assert entry["mediaType"] in mf.SUPPORTED and 0 <= entry["size"] <= mf.MAX_MANIFEST_SIZE
    assert str(Digest.parse(entry["digest"])) == entry["digest"]


@pytest_twisted.ensureDeferred
async def test_build_index_routes_through_the_client(tmp_path: Path) -> None:
    """The proxy's and the agent's ReferrerClient against the build-index's routes: add, filter,
    remove (the call a manifest delete ends in), and errors as registry errors."""
    router = Router()
    ReferrersAPI(ReferrerStore(tmp_path), Metrics("b1")).register(router)
    port = reactor.listenTCP(0, Site(router), interface="127.0.0.1")
    client = ReferrerClient(reactor, f"127.0.0.1:{port.getHost().port}", None,
                            HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))))
    try:
        body_a, digest_a = _artifact("a", "application/x-sig")
        body_b, digest_b = _artifact("b")
        for body, digest in ((body_a, digest_a), (body_b, digest_b)):
            await client.add("test/repo", SUBJECT, rf.descriptor(mf.parse_manifest(body), digest, len(body)))
        page, following = await client.page("test/repo", SUBJECT, None, None)
        assert sorted(e["digest"] for e in page) == sorted([str(digest_a), str(digest_b)])
        assert following is None
        page, _ = await client.page("test/repo", SUBJECT, "application/x-sig", None)
        assert [e["digest"] for e in page] == [str(digest_a)]
        await rf.forget_manifest(client, "test/repo", digest_a, body_a)
        await client.remove("test/repo", SUBJECT, digest_a)  # already gone: no error
        page, _ = await client.page("test/repo", SUBJECT, None, None)
        assert [e["digest"] for e in page] == [str(digest_b)]
        with pytest.raises(RegistryError) as e:
            await client.add("test/repo", SUBJECT, {"digest": "not one"})
        assert e.value.status == 503 and "400: descriptor mediaType" in e.value.message
        sha512_subject = Digest.of_bytes(b"s", "sha512")
        await client.add("test/repo", sha512_subject, _entry("c"))
        assert len((await client.page("test/repo", sha512_subject, None, None))[0]) == 1
    finally:
        await port.stopListening()
