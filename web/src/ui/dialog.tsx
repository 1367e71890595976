import { type ReactNode, useEffect, useRef } from 'react';
import { useI18n } from '../i18n/index.ts';

/** A modal on the native <dialog>: focus is kept inside, Escape closes it. */
export function Dialog(props: { title: string; onClose(): void; children: ReactNode; wide?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  const { t } = useI18n();
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
  }, []);
  return (
    <dialog
      ref={ref}
      className={props.wide ? 'wide' : undefined}
      aria-labelledby="dialog-title"
      onClose={props.onClose}
      onCancel={(e) => {
        e.preventDefault();
        props.onClose();
      }}
    >
      <header>
        <h2 id="dialog-title">{props.title}</h2>
        <button type="button" className="icon" aria-label={t('close')} onClick={props.onClose}>
          ×
        </button>
      </header>
      {props.children}
    </dialog>
  );
}

export function errorText(err: unknown): string {
  const e = err as { data?: { error?: string }; message?: string };
  return e.data?.error ?? e.message ?? String(err);
}

/** A form's error line, announced to screen readers. */
export function ErrorLine(props: { error: string | null }) {
  if (!props.error) return null;
  return (
    <p role="alert" className="error">
      {props.error}
    </p>
  );
}

/** Cancel and submit buttons at the foot of a dialog's form. */
export function FormActions(props: { onCancel(): void; cancel: string; submit: string; busy?: boolean }) {
  return (
    <div className="actions">
      <button type="button" onClick={props.onCancel}>
        {props.cancel}
      </button>
      <button type="submit" className="primary" disabled={props.busy}>
        {props.submit}
      </button>
    </div>
  );
}
