// Signs an artifact with sigstore-js's own bundle builder: a message signature by a key whose
// certificate is given, logged through its Rekor v2 client and timestamped through its TSA client,
// written out as a Sigstore bundle (JSON). Nothing here stands in for sigstore-js: the request,
// the entry and the timestamp are what @sigstore/sign makes and sends.
//
//   node sign.js ARTIFACT CERT.pem KEY.pem REKOR_BASE_URL TSA_BASE_URL OUT.sigstore.json
//
// Needs @sigstore/sign and @sigstore/bundle on NODE_PATH (scripts/sigstore-clients.sh installs
// the pinned versions).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const { MessageSignatureBundleBuilder, RekorWitness, TSAWitness } = require('@sigstore/sign');
const { bundleToJSON } = require('@sigstore/bundle');

async function main() {
  const [artifact, certPath, keyPath, rekor, tsa, out] = process.argv.slice(2);
  if (!out) {
    throw new Error('usage: node sign.js ARTIFACT CERT.pem KEY.pem REKOR_BASE_URL TSA_BASE_URL OUT');
  }
  const certificate = fs.readFileSync(certPath, 'utf8');
  const key = crypto.createPrivateKey(fs.readFileSync(keyPath, 'utf8'));
  const signer = {
    sign: async (data) => ({
      signature: crypto.sign('sha256', data, key),
      key: { $case: 'x509Certificate', certificate },
    }),
  };
  const builder = new MessageSignatureBundleBuilder({
    signer,
    witnesses: [
      new RekorWitness({ rekorBaseURL: rekor, majorApiVersion: 2, retry: 0 }),
      new TSAWitness({ tsaBaseURL: tsa, retry: 0 }),
    ],
  });
  const bundle = await builder.create({ data: fs.readFileSync(artifact) });
  fs.writeFileSync(out, JSON.stringify(bundleToJSON(bundle)));
}

main().catch((e) => {
  console.error(`sigstore-js: ${e.stack || e}`);
  process.exit(1);
});
