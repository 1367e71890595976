/**
 * Paths served under an older name as well as the current one. The spec renamed
 * /_matrix/client/r0 to /_matrix/client/v3 in v1.1 with the same endpoints, and older clients and
 * tools still call r0 (Synapse and Dendrite serve both). A few endpoints were called under
 * /unstable before they were stable, and shipped clients still do (matrix-js-sdk's legacy crypto
 * posts cross-signing keys to /unstable/keys/device_signing/upload).
 *
 * The alias is resolved before routing, so it answers exactly as the current path does (404
 * M_UNRECOGNIZED where v3 has no such endpoint).
 */
const R0 = '/_matrix/client/r0/';
const V3 = '/_matrix/client/v3/';
const UNSTABLE = '/_matrix/client/unstable/';
// The media API had the same rename (matrix-nio, and so matrix-commander, still upload to r0).
const MEDIA_R0 = '/_matrix/media/r0/';
const MEDIA_V3 = '/_matrix/media/v3/';
const UNSTABLE_ENDPOINTS = ['keys/device_signing/upload', 'keys/signatures/upload'];

export function aliasedUrl(url: string): string {
  if (url.startsWith(R0)) return V3 + url.slice(R0.length);
  if (url.startsWith(MEDIA_R0)) return MEDIA_V3 + url.slice(MEDIA_R0.length);
  if (url.startsWith(UNSTABLE)) {
    const rest = url.slice(UNSTABLE.length);
    const path = rest.split('?', 1)[0];
    if (UNSTABLE_ENDPOINTS.includes(path!)) return V3 + rest;
  }
  return url;
}
