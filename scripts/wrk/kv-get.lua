-- wrk: linearizable GET /kv/{key} over the keys kv-put.lua writes.
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "common.lua")
common.cycle(function(i)
  return wrk.format("GET", "/kv/" .. common.key(i))
end)
