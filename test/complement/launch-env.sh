# Sourced by ../shared/conformance/launch-conclave.sh just before it starts a homeserver for
# Complement. Complement creates many users and rooms within seconds from one address: the
# per-family request limits (on by default) would answer it 429, which measures the limits, not
# the API. Failed logins and registrations stay limited by the launcher's own settings.
export CONCLAVE_RATE_LIMITS=off
# The detectors (on by default) would throttle Complement's bursts of registrations, rooms and
# invites from its one address in the same way.
export CONCLAVE_DETECTION=off
# Complement's own federation servers (the ones its tests drive) serve TLS certificates signed by
# a CA that Complement makes for the run: trust it for outbound federation, as Complement's
# homeserver images install it in their system store.
if [ -n "${COMPLEMENT_CA_CERT:-}" ]; then
  export CONCLAVE_FEDERATION_CA_FILE="$COMPLEMENT_CA_CERT"
fi

# Federation between the deployment's own homeservers (hs1 <-> hs2). The runner gives each one a
# plain-HTTP port and no way to find the others (their names do not resolve). So each server here
# also listens for federation with TLS on its port + 1000, with a certificate for its name from a
# CA made for the run, and adds "<name> 127.0.0.1:<that port>" to a hosts file of its deployment
# (federation_hosts_file), which every server of the deployment reads before server discovery.
if [ -n "${COMPLEMENT_HS_NAME:-}" ] && [ -n "${COMPLEMENT_HS_DATA_DIR:-}" ] && [ -n "${COMPLEMENT_HS_PORT:-}" ]; then
  data_parent=$(dirname "$COMPLEMENT_HS_DATA_DIR")
  deployment=$(basename "$COMPLEMENT_HS_DATA_DIR")
  deployment=${deployment%-"$COMPLEMENT_HS_NAME"}
  fed_port=$((COMPLEMENT_HS_PORT + 1000))
  ca_dir="$data_parent/conclave-federation-ca"
  # One CA for the run, made by the first launcher; the others wait for it.
  if mkdir "$ca_dir.making" 2>/dev/null; then
    if [ ! -f "$ca_dir/ca.crt" ]; then
      tmp_ca=$(mktemp -d "$data_parent/ca.XXXXXX")
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tmp_ca/ca.key" -out "$tmp_ca/ca.crt" -days 30 -subj '/CN=Conclave Complement CA' \
        -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null
      rm -rf "$ca_dir"
      mv "$tmp_ca" "$ca_dir"
    fi
  else
    for _ in $(seq 1 300); do [ -f "$ca_dir/ca.crt" ] && break; sleep 0.1; done
  fi
  tls="$COMPLEMENT_HS_DATA_DIR/federation-tls"
  mkdir -p "$tls"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s\n' \
    "$COMPLEMENT_HS_NAME" > "$tls/leaf.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tls/leaf.key" \
    -out "$tls/leaf.csr" -subj "/CN=$COMPLEMENT_HS_NAME" 2>/dev/null
  openssl x509 -req -in "$tls/leaf.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" \
    -CAcreateserial -CAserial "$tls/ca.srl" -out "$tls/leaf.crt" -days 30 -extfile "$tls/leaf.ext" 2>/dev/null
  cat "$ca_dir/ca.crt" > "$tls/trusted.pem"
  if [ -n "${COMPLEMENT_CA_CERT:-}" ] && [ -f "$COMPLEMENT_CA_CERT" ]; then cat "$COMPLEMENT_CA_CERT" >> "$tls/trusted.pem"; fi
  export CONCLAVE_FEDERATION_CA_FILE="$tls/trusted.pem"
  export CONCLAVE_FEDERATION_TLS_CERTIFICATE="$tls/leaf.crt"
  export CONCLAVE_FEDERATION_TLS_KEY="$tls/leaf.key"
  export CONCLAVE_FEDERATION_BIND_ADDRESS=127.0.0.1
  export CONCLAVE_FEDERATION_PORT="$fed_port"
  hosts="$data_parent/$deployment.federation-hosts"
  echo "$COMPLEMENT_HS_NAME 127.0.0.1:$fed_port" >> "$hosts"
  export CONCLAVE_FEDERATION_HOSTS_FILE="$hosts"
fi

# Test settings for Complement's media tests, never defaults (README.md documents the keys):
# - TestContent, TestMediaFilenames, TestLocalPngThumbnail, ... download through the deprecated
#   unauthenticated /_matrix/media/v3 endpoints (they skip only Synapse, whose default froze
#   them). A freeze date far ahead serves every media there, as a server from before the freeze
#   of spec v1.11 does; a new install keeps `media_legacy_freeze: off`.
export CONCLAVE_MEDIA_LEGACY_FREEZE=2100-01-01T00:00:00Z
# - TestUrlPreview previews a page that Complement serves on 127.0.0.1: previews on, and that one
#   loopback address allowed (it never is by default).
export CONCLAVE_URL_PREVIEWS=on
export CONCLAVE_URL_PREVIEW_ALLOW=127.0.0.1

# The server as the launcher's own process (not under npm and tsx's runner): the deployer's
# SIGTERM reaches it directly, and whoever waits for the launcher waits for the server's shutdown.
# The runner keeps a homeserver's initialised data dir as a template only once the embedded
# database's lock file is gone; under npm, the launcher ended first, the lock was still there,
# and every homeserver started from an empty dir (migrations on each start).
export CONCLAVE_START_CMD="${CONCLAVE_START_CMD:-node --import tsx src/server.ts}"
