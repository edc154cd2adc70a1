-- wrk: PUT /kv/{key} with a 100 B value, keys k000000000000000..k000000000000999 (16 B).
wrk.method = "PUT"
wrk.body = string.rep("v", 100)
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, string.format("/kv/k%015d", counter % 1000))
end
