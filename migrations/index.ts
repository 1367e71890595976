import type { Migration } from 'kysely';
import * as m0001 from './0001_initial.ts';
import * as m0002 from './0002_rooms.ts';
import * as m0003 from './0003_e2ee_keys.ts';
import * as m0004 from './0004_key_backup.ts';
import * as m0005 from './0005_federated_events.ts';
import * as m0006 from './0006_federation_keys.ts';
import * as m0007 from './0007_audit_log.ts';
import * as m0012 from './0012_client_api.ts';

/** Every migration in order. Names are fixed once released: add new ones, never edit old ones. */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
  '0002_rooms': m0002,
  '0003_e2ee_keys': m0003,
  '0004_key_backup': m0004,
  '0005_federated_events': m0005,
  '0006_federation_keys': m0006,
  '0007_audit_log': m0007,
  '0012_client_api': m0012,
};
