-- wrk: etcd v3 JSON gateway put of a 100 B value, the same 1000 16 B keys as kv-put.lua.
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "common.lua")
local value = common.base64(string.rep("v", 100))
common.cycle(function(i)
  local body = string.format('{"key":"%s","value":"%s"}', common.base64(common.key(i)), value)
  return wrk.format("POST", "/v3/kv/put", nil, body)
end)
