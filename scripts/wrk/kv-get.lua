-- wrk: linearizable GET /kv/{key} over the keys kv-put.lua writes.
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("/kv/k%015d", counter % 1000))
end
