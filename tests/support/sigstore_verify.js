// Verifies a Sigstore bundle with the Sigstore project's own verifier (@sigstore/verify,
// installed by scripts/setup.sh), offline, against a public key and no transparency log,
// timestamp or certificate: the way `cosign verify --key --insecure-ignore-tlog` trusts a
// key-signed bundle.
//
// Usage: NODE_PATH=<tools>/sigstore/node_modules node sigstore_verify.js BUNDLE.json PUB.pem
// Exit 0 and "verified" when the signature holds; 1 with the verifier's error otherwise.
const crypto = require('crypto');
const fs = require('fs');
const { bundleFromJSON } = require('@sigstore/bundle');
const { toSignedEntity, toTrustMaterial, Verifier } = require('@sigstore/verify');

const [bundlePath, keyPath] = process.argv.slice(2);
try {
  const key = crypto.createPublicKey(fs.readFileSync(keyPath));
  const root = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [],
  };
  const trust = toTrustMaterial(root, () => ({ publicKey: key, validFor: () => true }));
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 })
    .verify(toSignedEntity(bundle));
  console.log('verified');
} catch (e) {
  console.error(String(e && e.message || e));
  process.exit(1);
}
