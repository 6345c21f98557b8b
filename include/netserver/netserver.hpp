#pragma once
/// Everything an application needs: Server, Handler/LineHandler, Conversation, Session, Registry, Room,
/// config, log and metrics, and the engine interface for personalities of its own.

#include "netserver/buffer.hpp"
#include "netserver/config.hpp"
#include "netserver/conversation.hpp"
#include "netserver/engine.hpp"
#include "netserver/errors.hpp"
#include "netserver/handler.hpp"
#include "netserver/log.hpp"
#include "netserver/metrics.hpp"
#include "netserver/options.hpp"
#include "netserver/registry.hpp"
#include "netserver/room.hpp"
#include "netserver/server.hpp"
#include "netserver/session.hpp"
#include "netserver/tls.hpp"
#include "netserver/version.hpp"
