-- wrk: PUT /kv/{key} with a 100 B value, keys k000000000000000..k000000000000999 (16 B).
local value = string.rep("v", 100)
-- Requests are formatted once per thread, in init (after wrk has set the Host header):
-- wrk's SCRIPTING guide notes that building one in every request() call is expensive, and
-- the generator shares the CPU with the server.
local requests = {}
init = function(args)
  for i = 0, 999 do
    requests[i] = wrk.format("PUT", string.format("/kv/k%015d", i), nil, value)
  end
end
local counter = 0
request = function()
  counter = counter + 1
  return requests[counter % 1000]
end
