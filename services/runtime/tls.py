"""TLS on the gRPC ports when certificates are mounted, mutual between services.

From the environment (deploy/k8s/components/tls sets these in every pod):
- AIOS_TLS_CERT, AIOS_TLS_KEY: this service's certificate (chain) and private
  key, PEM files. With both set the service's gRPC port speaks TLS only, and
  its channels to other services present them (mutual TLS);
- AIOS_TLS_CA: the CA bundle that verifies peers: the certificates of the
  services this one calls and, with client auth, of its callers;
- AIOS_TLS_DIR: instead, a folder holding tls.crt, tls.key and ca.crt, the
  layout of a cert-manager Secret (a single variable above wins over it);
- AIOS_TLS_CLIENT_AUTH: `require` (the internal services: a caller must present
  a certificate the CA signed) or `none` (the default, and the kernel's
  agent-facing port: agents authenticate with bearer tokens).

Nothing set: TLS is off, servers and channels are plain, as for `aios up` on
loopback and in the tests. Files are read once, at start: a renewed
certificate takes effect when the process restarts.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.runtime.config import ConfigError

CERT_VAR = "AIOS_TLS_CERT"
KEY_VAR = "AIOS_TLS_KEY"
CA_VAR = "AIOS_TLS_CA"
DIR_VAR = "AIOS_TLS_DIR"
CLIENT_AUTH_VAR = "AIOS_TLS_CLIENT_AUTH"
# What cert-manager writes into a certificate's Secret.
DIR_FILES = {CERT_VAR: "tls.crt", KEY_VAR: "tls.key", CA_VAR: "ca.crt"}
CLIENT_AUTH = ("none", "require")


@dataclass(frozen=True)
class TlsConfig:
    """PEM files (paths) and their contents; all empty = plain."""

    cert_path: str = ""
    key_path: str = ""
    ca_path: str = ""
    cert: bytes = b""
    key: bytes = b""
    ca: bytes = b""
    require_client_auth: bool = False

    @property
    def serves_tls(self) -> bool:
        return bool(self.cert)

    @property
    def dials_tls(self) -> bool:
        # A CA alone is enough to verify a TLS server (without presenting a certificate).
        return bool(self.cert or self.ca)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TlsConfig:
        env = os.environ if environ is None else environ
        folder = env.get(DIR_VAR, "")
        paths = {}
        for var, name in DIR_FILES.items():
            path = env.get(var, "") or (str(Path(folder) / name) if folder else "")
            # Some issuers (ACME, for one) write no ca.crt: then no CA, unless AIOS_TLS_CA names one.
            if folder and not env.get(var) and var == CA_VAR and not Path(path).exists():
                path = ""
            paths[var] = path
        if bool(paths[CERT_VAR]) != bool(paths[KEY_VAR]):
            raise ConfigError(f"{CERT_VAR} and {KEY_VAR} go together: set both or neither")
        mode = env.get(CLIENT_AUTH_VAR, "") or "none"
        if mode not in CLIENT_AUTH:
            raise ConfigError(f"{CLIENT_AUTH_VAR}={mode!r} is not one of {', '.join(CLIENT_AUTH)}")
        require = mode == "require"
        if require and not (paths[CERT_VAR] and paths[CA_VAR]):
            raise ConfigError(f"{CLIENT_AUTH_VAR}=require needs a certificate and key to serve TLS and "
                              f"{CA_VAR} to verify callers")
        return cls(cert_path=paths[CERT_VAR], key_path=paths[KEY_VAR], ca_path=paths[CA_VAR],
                   cert=_read(CERT_VAR, paths[CERT_VAR]), key=_read(KEY_VAR, paths[KEY_VAR]),
                   ca=_read(CA_VAR, paths[CA_VAR]), require_client_auth=require)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS for a gRPC port; None when this service has no certificate (plain)."""
        if not self.serves_tls:
            return None
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca or None,
                                           require_client_auth=self.require_client_auth)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS for a channel to another service, presenting this service's
        certificate when it has one; None: plain."""
        if not self.dials_tls:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.ca or None,
                                            private_key=self.key or None, certificate_chain=self.cert or None)

    def http_context(self) -> ssl.SSLContext | None:
        """TLS for an HTTP listener (the kernel's door) on the same certificate;
        no client certificates (its callers send bearer tokens)."""
        if not self.serves_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


PLAIN = TlsConfig()


def _read(var: str, path: str) -> bytes:
    if not path:
        return b""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{var}={path!r}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{var}={path!r} is not a PEM file")
    return data
