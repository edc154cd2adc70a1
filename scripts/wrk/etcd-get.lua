-- wrk: etcd v3 JSON gateway linearizable range of one key, the keys etcd-put.lua writes.
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "common.lua")
common.cycle(function(i)
  local body = string.format('{"key":"%s"}', common.base64(common.key(i)))
  return wrk.format("POST", "/v3/kv/range", nil, body)
end)
