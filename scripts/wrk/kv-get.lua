-- wrk: linearizable GET /kv/{key} over the keys kv-put.lua writes.
-- Requests are formatted once per thread, in init (after wrk has set the Host header):
-- wrk's SCRIPTING guide notes that building one in every request() call is expensive, and
-- the generator shares the CPU with the server.
local requests = {}
init = function(args)
  for i = 0, 999 do
    requests[i] = wrk.format("GET", string.format("/kv/k%015d", i))
  end
end
local counter = 0
request = function()
  counter = counter + 1
  return requests[counter % 1000]
end
