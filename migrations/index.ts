import type { Migration } from 'kysely';
import * as m0001 from './0001_initial.ts';

/** Every migration in order. Names are fixed once released: add new ones, never edit old ones. */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
};
