package cronguard

// The scripts as of f8fb5eb (before the trim), for the differential test.
const oldFenceLua = `
local function fence(key)
	redis.call('INCR', key)
	local c = redis.call('GET', key)
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
	if tonumber(c) < now then
		c = string.format('%d', now)
		redis.call('SET', key, c)
	end
	return c
end
local function abandoned(cur, from)
	for i = from, #ARGV do
		if cur == ARGV[i] then return true end
	end
	return false
end
`

const oldClaimLua = oldFenceLua + `
local function int(x)
	return type(x) == 'string' and string.match(x, '^%-?%d+$') ~= nil and #x <= 19
end
local ts, tn = tonumber(ARGV[1]), tonumber(ARGV[2])
local att, ttl = ARGV[4], tonumber(ARGV[5])
local now = tonumber(redis.call('TIME')[1])
local ahead = tonumber(ARGV[7])
local cur = redis.call('GET', KEYS[2])
if cur and abandoned(cur, 8) then
	redis.call('DEL', KEYS[2])
	cur = false
end
local m = redis.call('HMGET', KEYS[1], 's', 'n', 'by', 'att', 'ps', 'pn')
local ps, pn = '', ''
if m[1] then
	if not int(m[1]) or not int(m[2]) then
		return redis.error_reply('cronguard: unreadable claim mark in ' .. KEYS[1])
	end
	local ms, mn = tonumber(m[1]), tonumber(m[2])
	-- a mark far ahead of this server's clock (an instance with a wild
	-- clock, a hand edit) does not hold back a tick of the present
	local wild = ms > now + ahead and ts <= now + ahead
	if m[4] == att and ms == ts and mn == tn then
		if int(m[5]) and int(m[6]) then ps, pn = m[5], m[6] end
	elseif wild then
		ps, pn = '', ''
	elseif ts > ms or (ts == ms and tn > mn) then
		ps, pn = m[1], m[2]
	else
		return {'taken', m[3] or '', m[1], m[2]}
	end
end
local token = ''
if ttl > 0 then
	if cur and cur ~= att then
		redis.call('HSET', KEYS[1], 's', ARGV[1], 'n', ARGV[2], 'by', ARGV[3], 'att', att, 'ps', ps, 'pn', pn, 'tick', ARGV[6])
		return {'locked', ps, pn, cur, redis.call('PTTL', KEYS[2])}
	end
	token = fence(KEYS[3])
end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'n', ARGV[2], 'by', ARGV[3], 'att', att, 'ps', ps, 'pn', pn, 'tick', ARGV[6])
if ttl > 0 then
	redis.call('SET', KEYS[2], att, 'PX', ARGV[5])
end
return {'won', ps, pn, token}
`

const oldAcquireLua = oldFenceLua + `
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and not abandoned(cur, 3) then
	return {'locked', '', '', cur, redis.call('PTTL', KEYS[1])}
end
local token = fence(KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'won', '', '', token}
`
