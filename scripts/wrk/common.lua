-- Shared by the wrk scripts here: loaded with dofile from the script's own directory.
local common = {}

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding (etcd's JSON gateway encodes bytes so).
function common.base64(data)
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

-- Key number i of the 1000 keys: 16 bytes, k000000000000000..k000000000000999.
function common.key(i)
  return string.format("k%015d", i)
end

-- Makes wrk send make(0), make(1), ..., make(999), make(0), ... The requests are formatted
-- once per thread, in init (after wrk has set the Host header): wrk's SCRIPTING guide
-- notes that building one in every request() call is expensive, and the generator shares
-- the CPU with the server.
function common.cycle(make)
  local requests = {}
  init = function(args)
    for i = 0, 999 do
      requests[i] = make(i)
    end
  end
  local counter = 0
  request = function()
    counter = counter + 1
    return requests[counter % 1000]
  end
end

return common
