import type { MatrixClient } from 'matrix-js-sdk';
import {
  CryptoEvent,
  type ShowSasCallbacks,
  VerificationPhase,
  type VerificationRequest,
  VerificationRequestEvent,
  type Verifier,
  VerifierEvent,
} from 'matrix-js-sdk/lib/crypto-api/index.js';

/** One emoji verification (SAS), as the UI shows it. */
export type VerificationView =
  | { phase: 'incoming'; otherUserId: string }
  | { phase: 'waiting'; otherUserId: string }
  | { phase: 'emoji'; otherUserId: string; emoji: [string, string][] }
  | { phase: 'done'; otherUserId: string }
  | { phase: 'cancelled'; otherUserId: string };

/**
 * Follows the current verification request, incoming or outgoing, through the SDK's phases:
 * requested, ready, started (emoji shown), done. Either side may start the SAS once both are
 * ready; the side that did not start it picks the verifier up from the request.
 */
export class Verifications {
  private request: VerificationRequest | null = null;
  private verifier: Verifier | null = null;
  private sas: ShowSasCallbacks | null = null;
  view: VerificationView | null = null;

  constructor(
    private readonly matrix: MatrixClient,
    private readonly changed: () => void,
  ) {
    matrix.on(CryptoEvent.VerificationRequestReceived, (request) => {
      if (this.request && this.request.phase < VerificationPhase.Cancelled) return;
      this.follow(request);
    });
  }

  /** Asks another user (in a room we share with them) to verify by emoji. */
  async verifyUser(userId: string, roomId: string): Promise<void> {
    const crypto = this.matrix.getCrypto();
    if (!crypto) return;
    this.follow(await crypto.requestVerificationDM(userId, roomId));
  }

  /** Asks the account's other devices to verify this new one by emoji. */
  async verifyOwnDevice(): Promise<void> {
    const crypto = this.matrix.getCrypto();
    if (!crypto) return;
    this.follow(await crypto.requestOwnUserVerification());
  }

  /** Called when a verification completes (with the request, to tell our own from others'). */
  onDone: ((selfVerification: boolean) => void) | null = null;

  async accept(): Promise<void> {
    await this.request?.accept();
  }

  async confirm(): Promise<void> {
    this.setView('waiting');
    await this.sas?.confirm();
  }

  mismatch(): void {
    this.sas?.mismatch();
  }

  cancel(): void {
    void this.request?.cancel().catch(() => undefined);
    this.dismiss();
  }

  dismiss(): void {
    this.request = null;
    this.verifier = null;
    this.sas = null;
    this.view = null;
    this.changed();
  }

  private setView(phase: VerificationView['phase']): void {
    const otherUserId = this.request?.otherUserId ?? '';
    this.view =
      phase === 'emoji'
        ? { phase, otherUserId, emoji: this.sas?.sas.emoji ?? [] }
        : ({ phase, otherUserId } as VerificationView);
    this.changed();
  }

  private follow(request: VerificationRequest): void {
    this.request = request;
    const update = () => {
      if (this.request !== request) return;
      const phase = request.phase;
      if (phase === VerificationPhase.Requested) {
        this.setView(request.initiatedByMe ? 'waiting' : 'incoming');
      } else if (phase === VerificationPhase.Ready) {
        this.setView('waiting');
        // The side that asked starts the emoji exchange once the other is ready.
        if (request.initiatedByMe && !request.verifier) {
          void request.startVerification('m.sas.v1').then((v) => this.run(v));
        }
      } else if (phase === VerificationPhase.Started) {
        if (request.verifier && request.verifier !== this.verifier) this.run(request.verifier);
      } else if (phase === VerificationPhase.Done) {
        this.setView('done');
        this.onDone?.(request.isSelfVerification);
      } else if (phase === VerificationPhase.Cancelled) {
        this.setView('cancelled');
      }
    };
    request.on(VerificationRequestEvent.Change, update);
    update();
  }

  private run(verifier: Verifier): void {
    if (this.verifier === verifier) return;
    this.verifier = verifier;
    verifier.on(VerifierEvent.ShowSas, (sas) => {
      this.sas = sas;
      this.setView('emoji');
    });
    verifier.on(VerifierEvent.Cancel, () => this.setView('cancelled'));
    void verifier.verify().then(
      () => {
        if (this.view?.phase !== 'done') this.setView('done');
      },
      () => this.setView('cancelled'),
    );
  }
}
