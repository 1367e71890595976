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
