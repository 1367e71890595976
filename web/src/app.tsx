import { lazy, Suspense, useCallback, useEffect, useMemo, useState } from 'react';
import { I18nContext, initialLanguage, type Language, saveLanguage, translator } from './i18n/index.ts';
import type { ConclaveClient } from './matrix/client.ts';
import { clearSession, loadSession, type Session, saveSession } from './matrix/session.ts';
import { SignIn } from './ui/sign-in.tsx';

// The signed-in part (and matrix-js-sdk with it) loads on sign-in, not with the sign-in page.
const Chat = lazy(() => import('./ui/chat.tsx').then((m) => ({ default: m.Chat })));

/** Loads the Matrix layer (matrix-js-sdk) only once someone signs in, to keep the first load small. */
async function startClient(session: Session, password: string | null): Promise<ConclaveClient> {
  const { ConclaveClient } = await import('./matrix/client.ts');
  const client = new ConclaveClient(session);
  await client.start();
  void client.setUpEncryption(password);
  return client;
}

export function App() {
  const [language, setLanguageState] = useState<Language>(initialLanguage);
  const [client, setClient] = useState<ConclaveClient | null>(null);
  const [restoring, setRestoring] = useState(() => loadSession() !== null);
  const [error, setError] = useState<string | null>(null);

  const setLanguage = useCallback((l: Language) => {
    saveLanguage(l);
    setLanguageState(l);
  }, []);
  const i18n = useMemo(() => ({ language, t: translator(language), setLanguage }), [language, setLanguage]);
  useEffect(() => {
    document.documentElement.lang = language;
  }, [language]);

  // A saved session resumes after a reload.
  useEffect(() => {
    const saved = loadSession();
    if (!saved) return;
    let cancelled = false;
    startClient(saved, null)
      .then((c) => {
        if (cancelled) c.stop();
        else setClient(c);
      })
      .catch((err: Error) => {
        clearSession();
        setError(err.message);
      })
      .finally(() => setRestoring(false));
    return () => {
      cancelled = true;
    };
  }, []);

  const onSignedIn = useCallback(async (session: Session, password: string) => {
    saveSession(session);
    setClient(await startClient(session, password));
  }, []);

  const onSignOut = useCallback(async () => {
    const c = client;
    setClient(null);
    clearSession();
    window.location.hash = '';
    await c?.signOut().catch(() => undefined);
  }, [client]);

  return (
    <I18nContext.Provider value={i18n}>
      {client ? (
        <Suspense fallback={<Loading text={i18n.t('loading')} />}>
          <Chat client={client} onSignOut={onSignOut} />
        </Suspense>
      ) : restoring ? (
        <Loading text={i18n.t('loading')} />
      ) : (
        <SignIn onSignedIn={onSignedIn} initialError={error} />
      )}
    </I18nContext.Provider>
  );
}

function Loading(props: { text: string }) {
  return (
    <main className="centered" aria-busy="true">
      <p>{props.text}</p>
    </main>
  );
}
