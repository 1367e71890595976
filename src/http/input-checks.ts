import type { FastifyRequest } from 'fastify';
import { refuseControlCharacters } from '../services/input-checks.ts';

/** Path parameters that name an event type, state key, user or room alias, and what to call them. */
const NAMES: Record<string, string> = {
  eventType: 'The event type',
  type: 'The type',
  stateKey: 'The state key',
  userId: 'The user ID',
  roomAlias: 'The room alias',
  roomIdOrAlias: 'The room ID or alias',
};

/**
 * preValidation hook: refuses path parameters holding control characters, for every route at
 * once (services check the same in request bodies: src/services/input-checks.ts).
 */
export async function refuseControlCharactersInNames(request: FastifyRequest): Promise<void> {
  const params = request.params;
  if (typeof params !== 'object' || params === null) return;
  for (const [name, value] of Object.entries(params)) {
    const what = NAMES[name];
    if (what !== undefined && typeof value === 'string') refuseControlCharacters(value, what);
  }
}
