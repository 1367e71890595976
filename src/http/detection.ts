import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Action } from '../services/detection/detection.service.ts';
import { familyOf } from './rate-limits.ts';

const ACTION_OF: Partial<Record<string, Action>> = {
  send: 'message',
  join: 'join',
  invite: 'invite',
  create_room: 'create_room',
  keys_upload: 'keys',
  keys_claim: 'keys',
  to_device: 'to_device',
};

/** Invitees of one createRoom counted by the detectors (the request's own limits bound it too). */
const MAX_COUNTED_INVITES = 100;

/**
 * onResponse hook: tells the detectors of each successful action of a logged-in user (a message,
 * invite, join, room creation, key or to-device request). It runs after the answer is sent, so
 * counting never delays a client; a failure to count is logged, never answered.
 */
export async function observeRequest(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const session = request.session as FastifyRequest['session'] | undefined;
  const url = request.routeOptions.url;
  if (!session || url === undefined || reply.statusCode >= 300) return;
  const action = ACTION_OF[familyOf(request.method, url)];
  if (!action) return;
  const { detection } = request.server.services;
  const body = (request.body ?? {}) as { user_id?: unknown; invite?: unknown };
  try {
    if (action === 'invite') {
      await detection.acted(
        'invite',
        session,
        request.ip,
        typeof body.user_id === 'string' ? body.user_id : undefined,
      );
      return;
    }
    await detection.acted(action, session, request.ip);
    if (action === 'create_room' && Array.isArray(body.invite)) {
      for (const invitee of body.invite.slice(0, MAX_COUNTED_INVITES)) {
        if (typeof invitee === 'string') await detection.acted('invite', session, request.ip, invitee);
      }
    }
  } catch (err) {
    request.log.warn({ err }, 'detection failed');
  }
}
