// A local OpenID Connect provider (panva/oidc-provider) for caesar-rest's tests.
// Environment: PORT, ISSUER (default http://127.0.0.1:PORT), KEYS_FILE (private JWKS; created
// with one RS256 key when missing). Clients use the client_credentials grant; the access token's
// `sub` is the client id, so each client is one test user. The web application logs in as the
// public client `caesar-web` (authorization code + PKCE, a loopback redirect URI on any port, as
// RFC 8252 allows native clients) through the provider's development login form, where any
// login name is accepted and becomes the user's `sub`.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const PORT = Number(process.env.PORT || 3100);
const issuer = process.env.ISSUER || `http://127.0.0.1:${PORT}`;
const keysFile = process.env.KEYS_FILE || 'keys.json';
const API = 'urn:caesar-rest:api';

async function newKey(kid) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
}

let jwks;
if (existsSync(keysFile)) {
  jwks = JSON.parse(readFileSync(keysFile, 'utf8'));
} else {
  jwks = { keys: [await newKey(process.env.KID || 'key-1')] };
  writeFileSync(keysFile, JSON.stringify(jwks));
}

const client = (id, extra = {}) => ({
  client_id: id, client_secret: `${id}-secret`, grant_types: ['client_credentials'],
  response_types: [], redirect_uris: [], scope: 'api', ...extra,
});

const WEB = 'caesar-web';
const webClient = {
  client_id: WEB, application_type: 'native', token_endpoint_auth_method: 'none',
  grant_types: ['authorization_code'], response_types: ['code'], scope: 'openid api',
  redirect_uris: ['http://127.0.0.1/app/'], post_logout_redirect_uris: ['http://127.0.0.1/app/'],
};
const LOOPBACK = /^http:\/\/(127\.0\.0\.1|localhost)(:\d+)?$/;

const ROLES = { admin: ['admin'], alice: ['user'], bob: ['user'] };

const provider = new Provider(issuer, {
  jwks,
  clients: [client('alice'), client('bob'), client('admin'), client('shortlived'),
            client('opaque'), client('caesar-rest'), webClient],
  // The web client's pages (any loopback port) may call the token endpoint; others are servers.
  clientBasedCORS: (ctx, origin, c) => c.clientId === WEB && LOOPBACK.test(origin),
  pkce: { required: () => true },
  scopes: ['openid', 'api'],
  extraTokenClaims: (ctx, token) => ({
    roles: ROLES[token.clientId] || [],
    preferred_username: `${token.clientId}-name`,
  }),
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => API,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'api',
        audience: resource,
        accessTokenFormat: client.clientId === 'opaque' ? 'opaque' : 'jwt',
        accessTokenTTL: client.clientId === 'shortlived' ? 2 : 600,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});
provider.listen(PORT, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
