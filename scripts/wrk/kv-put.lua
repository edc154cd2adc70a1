-- wrk: PUT /kv/{key} with a 100 B value, keys k000000000000000..k000000000000999 (16 B).
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "common.lua")
local value = string.rep("v", 100)
common.cycle(function(i)
  return wrk.format("PUT", "/kv/" .. common.key(i), nil, value)
end)
