// An agent written against the AWS SDK for JavaScript v3 (@aws-sdk/client-s3),
// unchanged: configured by the environment an agent launcher sets
// (AWS_ACCESS_KEY_ID holding the phantom token, AWS_SECRET_ACCESS_KEY
// anything, AWS_REGION, AWS_ENDPOINT_URL_S3 the proxy's base URL) and
// path-style addressing. e2e/sdk/awsjs_test.go runs it and reads the one
// JSON line it prints.
//
//   node aws.mjs s3
//
// It prints what it got back and everything it saw of the responses
// (status, headers, bodies), for the test to look for the real secret.
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { S3Client, PutObjectCommand, GetObjectCommand, ListObjectsV2Command, HeadObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';

const seen = [];

function client() {
  const s3 = new S3Client({ forcePathStyle: true });
  // Record every raw response the SDK receives (before it parses them).
  s3.middlewareStack.add(
    (next) => async (args) => {
      const out = await next(args);
      const r = out.response;
      if (r) seen.push(`${r.statusCode} ${JSON.stringify(r.headers)}`);
      return out;
    },
    { step: 'deserialize', name: 'phantomRecordResponses', priority: 'low' },
  );
  return s3;
}

// payload is n bytes, the same pattern as the Go tests' testPayload.
function payload(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + Math.floor(i / 4096)) & 0xff;
  return b;
}

const sha256 = (b) => createHash('sha256').update(b).digest('hex');

const scenarios = {
  async s3() {
    const s3 = client();
    const bucket = 'js-bucket';
    const small = Buffer.from('hello from the JS SDK');
    const big = payload(3 * 1024 * 1024 + 5);
    // A Buffer: the SDK hashes it (a signed payload hash) and sends a CRC32 header.
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'notes/small.txt', Body: small, ContentType: 'text/plain' }));
    // A stream of known length: aws-chunked, STREAMING-UNSIGNED-PAYLOAD-TRAILER, even over plain http.
    const stream = Readable.from((function* () {
      for (let i = 0; i < big.length; i += 256 * 1024) yield big.subarray(i, i + 256 * 1024);
    })());
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'notes/big.bin', Body: stream, ContentLength: big.length }));
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'notes/big.bin' }));
    const gotBytes = Buffer.from(await got.Body.transformToByteArray());
    seen.push(gotBytes.toString('latin1'));
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'notes/small.txt' }));
    const list = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'notes/' }));
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: 'notes/small.txt' }), { expiresIn: 600 });
    const resp = await fetch(url);
    const presigned = await resp.text();
    seen.push(`${resp.status} ${JSON.stringify([...resp.headers])} ${presigned}`);
    return {
      bigSHA256: sha256(gotBytes),
      wantSHA256: sha256(big),
      headLength: head.ContentLength,
      keys: (list.Contents ?? []).map((o) => o.Key),
      presignedStatus: resp.status,
      presignedURLHost: new URL(url).host,
      presigned,
      seen,
    };
  },
  // A call the proxy refuses: the SDK's error, after whatever retries it chose.
  async 's3-put-refused'() {
    try {
      await client().send(new PutObjectCommand({ Bucket: 'js-bucket', Key: 'refused.txt', Body: 'no' }));
    } catch (err) {
      return { error: err.name, status: err.$metadata?.httpStatusCode ?? null, attempts: err.$metadata?.attempts ?? null, seen };
    }
    throw new Error('the call succeeded');
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
const res = await scenarios[name]();
process.stdout.write(JSON.stringify(res) + '\n');
