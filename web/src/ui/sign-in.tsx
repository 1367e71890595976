import { type FormEvent, useState } from 'react';
import { useI18n } from '../i18n/index.ts';
import { AuthError, login, register } from '../matrix/auth.ts';
import { homeserverUrl, type Session } from '../matrix/session.ts';
import { ErrorLine } from './dialog.tsx';
import { LanguagePicker } from './language-picker.tsx';

export function SignIn(props: {
  onSignedIn(session: Session, password: string): Promise<void>;
  initialError: string | null;
}) {
  const { t } = useI18n();
  const [mode, setMode] = useState<'login' | 'register'>('login');
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(props.initialError);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const baseUrl = homeserverUrl(window.location);
    try {
      const session =
        mode === 'login'
          ? await login(baseUrl, username.trim(), password)
          : await register(baseUrl, username.trim(), password, token.trim());
      await props.onSignedIn(session, password);
    } catch (err) {
      if (err instanceof AuthError) {
        if (err.errcode === 'M_FORBIDDEN' && mode === 'login') setError(t('errorBadLogin'));
        else if (err.errcode === 'CONCLAVE_TOKEN_NEEDED') setError(t('errorTokenNeeded'));
        else if (err.errcode === 'M_FORBIDDEN') setError(t('errorRegistrationClosed'));
        else setError(t('errorGeneric', { message: err.message }));
      } else {
        setError(t('errorGeneric', { message: (err as Error).message }));
      }
      setBusy(false);
    }
  };

  const title = mode === 'login' ? t('signIn') : t('register');
  return (
    <main className="centered sign-in">
      <header className="sign-in-header">
        <h1>{t('appName')}</h1>
        <LanguagePicker />
      </header>
      <form onSubmit={submit} aria-labelledby="sign-in-title" className="card">
        <h2 id="sign-in-title">{title}</h2>
        <label>
          {t('username')}
          <input
            name="username"
            autoComplete="username"
            required
            value={username}
            onChange={(e) => setUsername(e.target.value)}
          />
        </label>
        <label>
          {t('password')}
          <input
            name="password"
            type="password"
            autoComplete={mode === 'login' ? 'current-password' : 'new-password'}
            required
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </label>
        {mode === 'register' && (
          <label>
            {t('registrationToken')}
            <input name="token" value={token} onChange={(e) => setToken(e.target.value)} />
          </label>
        )}
        <ErrorLine error={error} />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? t('signingIn') : title}
        </button>
        <button
          type="button"
          className="link"
          onClick={() => {
            setMode(mode === 'login' ? 'register' : 'login');
            setError(null);
          }}
        >
          {mode === 'login' ? t('noAccount') : t('haveAccount')}
        </button>
      </form>
    </main>
  );
}
