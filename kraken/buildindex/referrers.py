"""The build-index's referrers index (OCI 1.1), shared by the proxy (writes) and the agents (reads).

- ``PUT /referrers/{repo}/subjects/{subject}``: body = the referrer's descriptor (JSON);
  records it (idempotent). ``403 TOO_MANY_REFERRERS`` past the per-subject limit.
- ``GET /referrers/{repo}/subjects/{subject}?artifactType=&last=``:
  ``{"referrers": [descriptor...], "next": <last of the next page> | null}``; an unknown
  subject has no referrers (``200``, empty list).
- ``DELETE /referrers/{repo}/subjects/{subject}/manifests/{digest}``: forget one referrer
  (``200``; ``404`` when there was none).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from twisted.web.server import Request

from kraken.core.http import HTTPError, Response, Router, digest_param, query_arg, read_json
from kraken.core.metrics import Metrics
from kraken.registry import referrers as rf
from kraken.registry.errors import RegistryError
from kraken.registry.names import check_name
from kraken.registry.referrerstore import ReferrerStore, TooManyReferrers

SUBJECT = "/referrers/{repo:path}/subjects/{subject}"


def _repo(raw: str) -> str:
    repo = unquote(raw)
    try:
        return check_name(repo)
    except RegistryError:
        raise HTTPError(400, "NAME_INVALID", f"invalid repository name {repo[:200]!r}") from None


class ReferrersAPI:
    def __init__(self, store: ReferrerStore, metrics: Metrics) -> None:
        self.store = store
        self.updates = metrics.counter("referrer_updates", "referrers index changes", ["outcome"])

    def register(self, router: Router) -> None:
        router.route("PUT", SUBJECT, self.put)
        router.route("GET", SUBJECT, self.get)
        router.route("DELETE", SUBJECT + "/manifests/{digest}", self.delete)

    def put(self, request: Request, repo: str, subject: str) -> Any:
        name, target = _repo(repo), digest_param(subject)
        entry = read_json(request, rf.MAX_DESCRIPTOR)
        try:
            self.store.add(name, target, entry)
        except TooManyReferrers as e:
            self.updates.labels("refused").inc()
            raise HTTPError(403, "TOO_MANY_REFERRERS", str(e)) from None
        except ValueError as e:
            self.updates.labels("invalid").inc()
            raise HTTPError(400, "DESCRIPTOR_INVALID", str(e)) from None
        self.updates.labels("added").inc()
        return {"subject": str(target), "digest": entry["digest"]}

    def get(self, request: Request, repo: str, subject: str) -> Any:
        name, target = _repo(repo), digest_param(subject)
        artifact_type = query_arg(request, "artifactType") or None
        last = query_arg(request, "last") or None
        page, following = self.store.page(name, target, artifact_type, last)
        return {"referrers": page, "next": following}

    def delete(self, request: Request, repo: str, subject: str, digest: str) -> Any:
        name, target, referrer = _repo(repo), digest_param(subject), digest_param(digest)
        if not self.store.remove(name, target, referrer):
            raise HTTPError(404, "REFERRER_UNKNOWN", f"{referrer} is no referrer of {target} in {name}")
        self.updates.labels("removed").inc()
        return Response(200, {"subject": str(target), "digest": str(referrer)})

