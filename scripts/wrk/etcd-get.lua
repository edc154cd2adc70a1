-- wrk: etcd v3 JSON gateway linearizable range of one key, the keys etcd-put.lua writes.
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return alphabet:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end
local bodies = {}
for i = 0, 999 do
  bodies[i] = string.format('{"key":"%s"}', base64(string.format("k%015d", i)))
end
-- Requests are formatted once per thread, in init (after wrk has set the Host header):
-- wrk's SCRIPTING guide notes that building one in every request() call is expensive, and
-- the generator shares the CPU with the server.
local requests = {}
init = function(args)
  for i = 0, 999 do
    requests[i] = wrk.format("POST", "/v3/kv/range", nil, bodies[i])
  end
end
local counter = 0
request = function()
  counter = counter + 1
  return requests[counter % 1000]
end
