import type { Bus } from './bus.ts';
import { MemoryBus } from './memory-bus.ts';
import { RedisBus } from './redis-bus.ts';

export type { Bus } from './bus.ts';

/** Redis when a URL is given, else the in-process bus. */
export async function openBus(redisUrl: string): Promise<Bus> {
  return redisUrl ? RedisBus.connect(redisUrl) : new MemoryBus();
}
