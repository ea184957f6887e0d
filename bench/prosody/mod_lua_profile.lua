-- A sampling CPU profiler for Prosody (issue 15, bench/latency.py --profile): every
-- `lua_profile_every` VM instructions, in the main thread and in every coroutine created after
-- load, the process CPU time since the last sample is charged to the Lua stack at that point.
-- C functions called in between are charged to their Lua caller. Written to `lua_profile_file`
-- every 2 s as collapsed stacks ("outer;...;inner<TAB>seconds"), as flame graph tools read them.
-- Loaded per host, installed once per process.
if rawget(_G, "mdm_lua_profile_installed") then return; end
rawset(_G, "mdm_lua_profile_installed", true);
local getinfo, clock, t_concat = debug.getinfo, os.clock, table.concat;
local every = module:get_option_number("lua_profile_every", 10000);
local out = module:get_option_string("lua_profile_file", "/tmp/lua_profile.txt");
local stacks = {};
local last = clock();
local function hook()
	local now = clock();
	local dt = now - last;
	last = now;
	local frames, level = {}, 2;
	while level < 60 do
		local i = getinfo(level, "Sn");
		if not i then break end
		frames[#frames + 1] = i.short_src .. ":" .. (i.linedefined or 0) .. " " .. (i.name or "?");
		level = level + 1;
	end
	if #frames == 0 then return end
	-- outermost first
	local n = #frames;
	for k = 1, n // 2 do frames[k], frames[n - k + 1] = frames[n - k + 1], frames[k]; end
	local key = t_concat(frames, ";");
	stacks[key] = (stacks[key] or 0) + dt;
end
-- the main thread (the network loop, where timers run), and this one
module:add_timer(0, function() debug.sethook(hook, "", every); end);
debug.sethook(hook, "", every);
local create = coroutine.create;
coroutine.create = function (f)
	local co = create(f);
	debug.sethook(co, hook, "", every);
	return co;
end
local function dump()
	local f = io.open(out, "w");
	if not f then return 2 end
	for k, v in pairs(stacks) do f:write(k, "\t", string.format("%.6f", v), "\n"); end
	f:close();
	return 2;
end
module:add_timer(2, dump);
