"""The Docker Registry HTTP API v2 / OCI distribution API, shared by the proxy and the agent.

``api.RegistryResource`` serves ``/v2/...`` over a :class:`storage.RegistryStorage`; the proxy
plugs in a read-write storage (local CAS, origins, build-index), the agent a read-only one
(P2P downloads, build-index lookups).
"""
