-- POST form bodies (application/x-www-form-urlencoded), as panels do.
--   wrk ... -s form.lua <url> -- <bodies file> [delay_ms]
-- The bodies file has one "weight<TAB>body" line per request kind. With one line
-- the request is static (wrk's fast path: no Lua per request). With several, each
-- request picks one with math.random by weight (the mixed panel-like load, or a
-- status spread over many orders). delay_ms > 0 paces every connection: it waits
-- a random 0.5x..1.5x delay_ms before each request (fixed-rate approximation,
-- wrk2 is not packaged; the jitter keeps connections from marching in step).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local function read_bodies(path)
   local bodies, weights = {}, {}
   for line in io.lines(path) do
      local w, body = line:match("^(%d+)\t(.*)$")
      if w then
         bodies[#bodies + 1] = body
         weights[#weights + 1] = tonumber(w)
      end
   end
   assert(#bodies > 0, "no bodies in " .. path)
   return bodies, weights
end

function init(args)
   local bodies, weights = read_bodies(args[1])
   local pause = tonumber(args[2] or "0")
   if #bodies == 1 then
      wrk.body = bodies[1]
   else
      local requests, bounds, total = {}, {}, 0
      for i, body in ipairs(bodies) do
         requests[i] = wrk.format(nil, nil, nil, body)
         total = total + weights[i]
         bounds[i] = total
      end
      request = function()
         local r = math.random() * total
         for i = 1, #bounds do
            if r < bounds[i] then return requests[i] end
         end
         return requests[#requests]
      end
   end
   if pause > 0 then
      delay = function() return math.floor(pause * (0.5 + math.random())) end
   end
end
