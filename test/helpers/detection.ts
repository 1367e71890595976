import {
  type Config,
  DETECTORS,
  type DetectorName,
  type DetectorResponse,
  defaultConfig,
} from '../../src/config.ts';
import type { TestServer } from './server.ts';
import { PASSWORD } from './server.ts';

export { until } from './wait.ts';

/**
 * Detection settings for a test: every detector off in practice (a threshold no test reaches)
 * but those given, as `[count, windowMs]`, with their responses.
 */
export function detecting(
  rules: Partial<Record<DetectorName, [number, number]>>,
  responses: Partial<Record<DetectorName, DetectorResponse[]>> = {},
  more: Partial<Config> = {},
): Partial<Config> {
  const d = defaultConfig();
  return {
    detection: true,
    detectorRules: Object.fromEntries(
      DETECTORS.map((n) => [
        n,
        rules[n] ? { count: rules[n][0], windowMs: rules[n][1] } : { count: 1_000_000, windowMs: 1000 },
      ]),
    ) as Config['detectorRules'],
    detectorResponses: { ...d.detectorResponses, ...responses },
    // One request a minute once throttled, so the throttle shows at once.
    detectionThrottleRule: { perSecond: 1 / 60, burst: 1 },
    ...more,
  };
}

/** An account made through the service (setup, not what the detectors watch), logged in. */
export async function account(s: TestServer, localpart: string, admin = false) {
  const login = await s.runtime.services.accounts.createAccount({
    localpart,
    password: PASSWORD,
    login: true,
    admin,
  });
  return login as { user_id: string; device_id: string; access_token: string };
}

/** The detector alerts recorded in the audit log for `target`. */
export async function alertsFor(s: TestServer, target: string) {
  return s.runtime.services.audit.list({ action: 'detector.alert', target });
}
