// jobcast: the key nginx hashes a real-time request on (njs, `js_set $jobcast_route
// jobcast.route`): the user's partition, as jobcast computes it — CRC-32 of the routing
// hint `uid` (UTF-8), modulo JOBCAST_PARTITIONS (`$jobcast_partitions`) — so that all the
// users of one partition share a notifier, which alone then reads that partition's
// streams. Without a hint: the client's address (still sticky). Plain ES5 for njs 0.7+.

var TABLE = (function () {
  var table = [];
  for (var n = 0; n < 256; n++) {
    var c = n;
    for (var k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table.push(c >>> 0);
  }
  return table;
})();

// CRC-32 (IEEE 802.3, zlib's) of the UTF-8 bytes of `text`.
function crc32(text) {
  var bytes = Buffer.from(String(text), "utf8");
  var crc = 0xffffffff;
  for (var i = 0; i < bytes.length; i++) crc = TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function partition(uid, partitions) {
  return crc32(uid) % partitions;
}

function route(r) {
  var uid = r.args.uid;
  if (Array.isArray(uid)) uid = uid[0];
  var partitions = parseInt(r.variables.jobcast_partitions, 10);
  if (!uid || !(partitions > 0)) return r.remoteAddress;
  return "p" + partition(uid, partitions);
}

export default { route: route, partition: partition, crc32: crc32 };
