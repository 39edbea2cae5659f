-- wrk script: HTTP announces for random torrents from random peers, as a
-- neutral check on swarmgate's own load generator.
--   wrk -t1 -c128 -d20s -s benches/wrk/announce.lua http://127.0.0.1:6969
-- Environment:
--   TORRENTS  how many distinct infohashes (default 10000; 0 = a new one per request)
--   TOKENS    a file of "infohash_hex token" lines (e.g. one `swarmgate mint` per
--             torrent); announces then pick a line and carry ?jwt= for its torrent
-- Infohashes and peer ids are percent-encoded random bytes; numwant=30, compact.

local torrents = tonumber(os.getenv("TORRENTS") or "10000")
local tokens = {}
local token_list = {}

local function hex_to_escaped(hex)
  return (hex:gsub("..", function(byte) return "%" .. byte end))
end

local function random_escaped(n)
  local parts = {}
  for i = 1, n do parts[i] = string.format("%%%02X", math.random(0, 255)) end
  return table.concat(parts)
end

-- Torrent i's infohash: 20 bytes derived from i, so every thread agrees.
local function infohash_hex(i)
  local parts = {}
  local x = i * 2654435761 % 4294967296
  for b = 1, 20 do
    x = (x * 1103515245 + 12345) % 2147483648
    parts[b] = string.format("%02x", x % 256)
  end
  return table.concat(parts)
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  local path = os.getenv("TOKENS")
  if path then
    for line in io.lines(path) do
      local hex, token = line:match("^(%x+)%s+(%S+)$")
      if hex then token_list[#token_list + 1] = { hex, token } end
    end
  end
end

function request()
  local hex, token
  if #token_list > 0 then
    local entry = token_list[math.random(1, #token_list)]
    hex, token = entry[1], entry[2]
  elseif torrents > 0 then
    hex = infohash_hex(math.random(1, torrents))
  end
  local info_hash = hex and hex_to_escaped(hex) or random_escaped(20)
  local left = math.random(0, 4) == 0 and 0 or 1048576
  local path = "/announce?info_hash=" .. info_hash .. "&peer_id=-WK0001-" .. random_escaped(12)
    .. "&port=" .. math.random(1024, 65535) .. "&uploaded=0&downloaded=0&left=" .. left
    .. "&compact=1&numwant=30"
  if token then path = path .. "&jwt=" .. token end
  return wrk.format("GET", path)
end
