import type { Migration } from 'kysely';
import * as m0001 from './0001_initial.ts';
import * as m0002 from './0002_rooms.ts';
import * as m0003 from './0003_e2ee_keys.ts';
import * as m0004 from './0004_key_backup.ts';
import * as m0005 from './0005_federated_events.ts';
import * as m0006 from './0006_federation_keys.ts';
import * as m0007 from './0007_audit_log.ts';
import * as m0008 from './0008_retention.ts';
import * as m0009 from './0009_media.ts';
import * as m0010 from './0010_admin.ts';
import * as m0011 from './0011_detection.ts';
import * as m0012 from './0012_client_api.ts';
import * as m0013 from './0013_remote_invites.ts';
import * as m0014 from './0014_media_references.ts';
import * as m0015 from './0015_search.ts';
import * as m0016 from './0016_push.ts';
import * as m0017 from './0017_key_management.ts';
import * as m0018 from './0018_remote_device_lists.ts';
import * as m0019 from './0019_e2ee_edus.ts';
import * as m0020 from './0020_remote_media.ts';
import * as m0022 from './0022_stream_sequence.ts';

/** Every migration in order. Names are fixed once released: add new ones, never edit old ones. */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
  '0002_rooms': m0002,
  '0003_e2ee_keys': m0003,
  '0004_key_backup': m0004,
  '0005_federated_events': m0005,
  '0006_federation_keys': m0006,
  '0007_audit_log': m0007,
  '0008_retention': m0008,
  '0009_media': m0009,
  '0010_admin': m0010,
  '0011_detection': m0011,
  '0012_client_api': m0012,
  '0013_remote_invites': m0013,
  '0014_media_references': m0014,
  '0015_search': m0015,
  '0016_push': m0016,
  '0017_key_management': m0017,
  '0018_remote_device_lists': m0018,
  '0019_e2ee_edus': m0019,
  '0020_remote_media': m0020,
  '0022_stream_sequence': m0022,
};
