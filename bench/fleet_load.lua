-- wrk script of bench/fleet_load.py: closed-loop POSTs for the verify-vs-echo ratio.
-- Arguments: MODE (verify | echo), TOKENS_FILE, IDS_FILE.
-- verify: POST /v1/verify, a unique tap id per request, tokens of many kiosks in turn (one
-- kiosk may only have 16 requests in flight), ID numbers of known people in turn.
-- echo: POST /echo with a body of the same shape and size.
local tokens, ids = {}, {}
local counter = 0
local mode, prefix = "verify", "w"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

function init(args)
  mode = args[1]
  for line in io.lines(args[2]) do tokens[#tokens + 1] = line end
  for line in io.lines(args[3]) do ids[#ids + 1] = line end
  prefix = "w" .. tostring(thread_no) .. "-" .. tostring(os.time()) .. tostring(math.random(100000))
end

function request()
  counter = counter + 1
  local body = '{"tap_id":"' .. prefix .. "-" .. counter ..
    '","credential":{"kind":"id_card","id_number":"' .. ids[counter % #ids + 1] .. '"}}'
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[counter % #tokens + 1],
  }
  local path = mode == "echo" and "/echo" or "/v1/verify"
  return wrk.format("POST", path, headers, body)
end
