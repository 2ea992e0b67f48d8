/*
 * INFO parser: real INFO output captured from redis-server 7.0.15 (a primary
 * with replicas, replicas up, syncing, cut off and never connected), then the
 * same text mangled: LF endings, cut at every length, garbage, huge lines.
 */
#include "info.h"
#include "unit.h"

#include <limits.h>
#include <stdlib.h>

/* A primary with two replicas online, keys with and without TTLs in db0. */
static const char INFO_MASTER_2_SLAVES[] =
    "# Server\r\n"
    "redis_version:7.0.15\r\n"
    "redis_git_sha1:00000000\r\n"
    "redis_git_dirty:0\r\n"
    "redis_build_id:ae4d7c971a948f0\r\n"
    "redis_mode:standalone\r\n"
    "os:Linux 6.18.44-fc-v657 x86_64\r\n"
    "arch_bits:64\r\n"
    "monotonic_clock:POSIX clock_gettime\r\n"
    "multiplexing_api:epoll\r\n"
    "atomicvar_api:c11-builtin\r\n"
    "gcc_version:12.2.0\r\n"
    "process_id:7548\r\n"
    "process_supervised:no\r\n"
    "run_id:c5757a150503afac1f3432221965e3d923037494\r\n"
    "tcp_port:21379\r\n"
    "server_time_usec:1795879629012576\r\n"
    "uptime_in_seconds:16\r\n"
    "uptime_in_days:0\r\n"
    "hz:10\r\n"
    "configured_hz:10\r\n"
    "lru_clock:717516\r\n"
    "executable:/tmp/kdinfo.FqjG/m/redis-server\r\n"
    "config_file:\r\n"
    "io_threads_active:0\r\n"
    "\r\n"
    "# Clients\r\n"
    "connected_clients:1\r\n"
    "cluster_connections:0\r\n"
    "maxclients:10000\r\n"
    "client_recent_max_input_buffer:20480\r\n"
    "client_recent_max_output_buffer:20504\r\n"
    "blocked_clients:0\r\n"
    "tracking_clients:0\r\n"
    "clients_in_timeout_table:0\r\n"
    "\r\n"
    "# Memory\r\n"
    "used_memory:1156152\r\n"
    "used_memory_human:1.10M\r\n"
    "used_memory_rss:12492800\r\n"
    "used_memory_rss_human:11.91M\r\n"
    "used_memory_peak:1156152\r\n"
    "used_memory_peak_human:1.10M\r\n"
    "used_memory_peak_perc:100.11%\r\n"
    "used_memory_overhead:897124\r\n"
    "used_memory_startup:875992\r\n"
    "used_memory_dataset:259028\r\n"
    "used_memory_dataset_perc:92.46%\r\n"
    "allocator_allocated:1773536\r\n"
    "allocator_active:2048000\r\n"
    "allocator_resident:4837376\r\n"
    "total_system_memory:25276510208\r\n"
    "total_system_memory_human:23.54G\r\n"
    "used_memory_lua:32768\r\n"
    "used_memory_vm_eval:32768\r\n"
    "used_memory_lua_human:32.00K\r\n"
    "used_memory_scripts_eval:0\r\n"
    "number_of_cached_scripts:0\r\n"
    "number_of_functions:0\r\n"
    "number_of_libraries:0\r\n"
    "used_memory_vm_functions:33792\r\n"
    "used_memory_vm_total:66560\r\n"
    "used_memory_vm_total_human:65.00K\r\n"
    "used_memory_functions:200\r\n"
    "used_memory_scripts:200\r\n"
    "used_memory_scripts_human:200B\r\n"
    "maxmemory:0\r\n"
    "maxmemory_human:0B\r\n"
    "maxmemory_policy:noeviction\r\n"
    "allocator_frag_ratio:1.15\r\n"
    "allocator_frag_bytes:274464\r\n"
    "allocator_rss_ratio:2.36\r\n"
    "allocator_rss_bytes:2789376\r\n"
    "rss_overhead_ratio:2.58\r\n"
    "rss_overhead_bytes:7655424\r\n"
    "mem_fragmentation_ratio:11.19\r\n"
    "mem_fragmentation_bytes:11376560\r\n"
    "mem_not_counted_for_evict:0\r\n"
    "mem_replication_backlog:20508\r\n"
    "mem_total_replication_buffers:20504\r\n"
    "mem_clients_slaves:0\r\n"
    "mem_clients_normal:0\r\n"
    "mem_cluster_links:0\r\n"
    "mem_aof_buffer:0\r\n"
    "mem_allocator:jemalloc-5.3.0\r\n"
    "active_defrag_running:0\r\n"
    "lazyfree_pending_objects:0\r\n"
    "lazyfreed_objects:0\r\n"
    "\r\n"
    "# Persistence\r\n"
    "loading:0\r\n"
    "async_loading:0\r\n"
    "current_cow_peak:0\r\n"
    "current_cow_size:0\r\n"
    "current_cow_size_age:0\r\n"
    "current_fork_perc:0.00\r\n"
    "current_save_keys_processed:0\r\n"
    "current_save_keys_total:0\r\n"
    "rdb_changes_since_last_save:56\r\n"
    "rdb_bgsave_in_progress:0\r\n"
    "rdb_last_save_time:1795879613\r\n"
    "rdb_last_bgsave_status:ok\r\n"
    "rdb_last_bgsave_time_sec:0\r\n"
    "rdb_current_bgsave_time_sec:-1\r\n"
    "rdb_saves:0\r\n"
    "rdb_last_cow_size:344064\r\n"
    "rdb_last_load_keys_expired:0\r\n"
    "rdb_last_load_keys_loaded:0\r\n"
    "aof_enabled:0\r\n"
    "aof_rewrite_in_progress:0\r\n"
    "aof_rewrite_scheduled:0\r\n"
    "aof_last_rewrite_time_sec:-1\r\n"
    "aof_current_rewrite_time_sec:-1\r\n"
    "aof_last_bgrewrite_status:ok\r\n"
    "aof_rewrites:0\r\n"
    "aof_rewrites_consecutive_failures:0\r\n"
    "aof_last_write_status:ok\r\n"
    "aof_last_cow_size:0\r\n"
    "module_fork_in_progress:0\r\n"
    "module_fork_last_cow_size:0\r\n"
    "\r\n"
    "# Stats\r\n"
    "total_connections_received:59\r\n"
    "total_commands_processed:84\r\n"
    "instantaneous_ops_per_sec:3\r\n"
    "total_net_input_bytes:2331\r\n"
    "total_net_output_bytes:6630\r\n"
    "total_net_repl_input_bytes:0\r\n"
    "total_net_repl_output_bytes:754\r\n"
    "instantaneous_input_kbps:0.11\r\n"
    "instantaneous_output_kbps:0.06\r\n"
    "instantaneous_input_repl_kbps:0.00\r\n"
    "instantaneous_output_repl_kbps:0.06\r\n"
    "rejected_connections:0\r\n"
    "sync_full:2\r\n"
    "sync_partial_ok:0\r\n"
    "sync_partial_err:0\r\n"
    "expired_keys:0\r\n"
    "expired_stale_perc:0.00\r\n"
    "expired_time_cap_reached_count:0\r\n"
    "expire_cycle_cpu_milliseconds:0\r\n"
    "evicted_keys:0\r\n"
    "evicted_clients:0\r\n"
    "total_eviction_exceeded_time:0\r\n"
    "current_eviction_exceeded_time:0\r\n"
    "keyspace_hits:0\r\n"
    "keyspace_misses:0\r\n"
    "pubsub_channels:0\r\n"
    "pubsub_patterns:0\r\n"
    "pubsubshard_channels:0\r\n"
    "latest_fork_usec:371\r\n"
    "total_forks:1\r\n"
    "migrate_cached_sockets:0\r\n"
    "slave_expires_tracked_keys:0\r\n"
    "active_defrag_hits:0\r\n"
    "active_defrag_misses:0\r\n"
    "active_defrag_key_hits:0\r\n"
    "active_defrag_key_misses:0\r\n"
    "total_active_defrag_time:0\r\n"
    "current_active_defrag_time:0\r\n"
    "tracking_total_keys:0\r\n"
    "tracking_total_items:0\r\n"
    "tracking_total_prefixes:0\r\n"
    "unexpected_error_replies:0\r\n"
    "total_error_replies:0\r\n"
    "dump_payload_sanitizations:0\r\n"
    "total_reads_processed:141\r\n"
    "total_writes_processed:68\r\n"
    "io_threaded_reads_processed:0\r\n"
    "io_threaded_writes_processed:0\r\n"
    "reply_buffer_shrinks:2\r\n"
    "reply_buffer_expands:0\r\n"
    "\r\n"
    "# Replication\r\n"
    "role:master\r\n"
    "connected_slaves:2\r\n"
    "slave0:ip=127.0.0.1,port=21380,state=online,offset=1307,lag=1\r\n"
    "slave1:ip=127.0.0.1,port=21381,state=online,offset=1307,lag=1\r\n"
    "master_failover_state:no-failover\r\n"
    "master_replid:5ffe4039a01b3ce9202b904e94d48bd2796253f5\r\n"
    "master_replid2:0000000000000000000000000000000000000000\r\n"
    "master_repl_offset:1307\r\n"
    "second_repl_offset:-1\r\n"
    "repl_backlog_active:1\r\n"
    "repl_backlog_size:1048576\r\n"
    "repl_backlog_first_byte_offset:1\r\n"
    "repl_backlog_histlen:1307\r\n"
    "\r\n"
    "# CPU\r\n"
    "used_cpu_sys:0.019822\r\n"
    "used_cpu_user:0.014867\r\n"
    "used_cpu_sys_children:0.002323\r\n"
    "used_cpu_user_children:0.000000\r\n"
    "used_cpu_sys_main_thread:0.019651\r\n"
    "used_cpu_user_main_thread:0.014738\r\n"
    "\r\n"
    "# Modules\r\n"
    "\r\n"
    "# Errorstats\r\n"
    "\r\n"
    "# Cluster\r\n"
    "cluster_enabled:0\r\n"
    "\r\n"
    "# Keyspace\r\n"
    "db0:keys=7,expires=2,avg_ttl=738849\r\n";

/* The same primary while a third replica waits for its full sync (wait_bgsave). */
static const char INFO_MASTER_SLAVE_SYNCING[] =
    "# Server\r\n"
    "redis_version:7.0.15\r\n"
    "redis_git_sha1:00000000\r\n"
    "redis_git_dirty:0\r\n"
    "redis_build_id:ae4d7c971a948f0\r\n"
    "redis_mode:standalone\r\n"
    "os:Linux 6.18.44-fc-v657 x86_64\r\n"
    "arch_bits:64\r\n"
    "monotonic_clock:POSIX clock_gettime\r\n"
    "multiplexing_api:epoll\r\n"
    "atomicvar_api:c11-builtin\r\n"
    "gcc_version:12.2.0\r\n"
    "process_id:7548\r\n"
    "process_supervised:no\r\n"
    "run_id:c5757a150503afac1f3432221965e3d923037494\r\n"
    "tcp_port:21379\r\n"
    "server_time_usec:1795879633967699\r\n"
    "uptime_in_seconds:20\r\n"
    "uptime_in_days:0\r\n"
    "hz:10\r\n"
    "configured_hz:10\r\n"
    "lru_clock:717521\r\n"
    "executable:/tmp/kdinfo.FqjG/m/redis-server\r\n"
    "config_file:\r\n"
    "io_threads_active:0\r\n"
    "\r\n"
    "# Clients\r\n"
    "connected_clients:1\r\n"
    "cluster_connections:0\r\n"
    "maxclients:10000\r\n"
    "client_recent_max_input_buffer:20480\r\n"
    "client_recent_max_output_buffer:20504\r\n"
    "blocked_clients:0\r\n"
    "tracking_clients:0\r\n"
    "clients_in_timeout_table:0\r\n"
    "\r\n"
    "# Memory\r\n"
    "used_memory:1409216\r\n"
    "used_memory_human:1.34M\r\n"
    "used_memory_rss:12886016\r\n"
    "used_memory_rss_human:12.29M\r\n"
    "used_memory_peak:1409216\r\n"
    "used_memory_peak_human:1.34M\r\n"
    "used_memory_peak_perc:101.61%\r\n"
    "used_memory_overhead:1013948\r\n"
    "used_memory_startup:875992\r\n"
    "used_memory_dataset:395268\r\n"
    "used_memory_dataset_perc:74.13%\r\n"
    "allocator_allocated:2080320\r\n"
    "allocator_active:2469888\r\n"
    "allocator_resident:5144576\r\n"
    "total_system_memory:25276510208\r\n"
    "total_system_memory_human:23.54G\r\n"
    "used_memory_lua:32768\r\n"
    "used_memory_vm_eval:32768\r\n"
    "used_memory_lua_human:32.00K\r\n"
    "used_memory_scripts_eval:0\r\n"
    "number_of_cached_scripts:0\r\n"
    "number_of_functions:0\r\n"
    "number_of_libraries:0\r\n"
    "used_memory_vm_functions:33792\r\n"
    "used_memory_vm_total:66560\r\n"
    "used_memory_vm_total_human:65.00K\r\n"
    "used_memory_functions:200\r\n"
    "used_memory_scripts:200\r\n"
    "used_memory_scripts_human:200B\r\n"
    "maxmemory:0\r\n"
    "maxmemory_human:0B\r\n"
    "maxmemory_policy:noeviction\r\n"
    "allocator_frag_ratio:1.19\r\n"
    "allocator_frag_bytes:389568\r\n"
    "allocator_rss_ratio:2.08\r\n"
    "allocator_rss_bytes:2674688\r\n"
    "rss_overhead_ratio:2.50\r\n"
    "rss_overhead_bytes:7741440\r\n"
    "mem_fragmentation_ratio:9.41\r\n"
    "mem_fragmentation_bytes:11516728\r\n"
    "mem_not_counted_for_evict:0\r\n"
    "mem_replication_backlog:41012\r\n"
    "mem_total_replication_buffers:41008\r\n"
    "mem_clients_slaves:0\r\n"
    "mem_clients_normal:0\r\n"
    "mem_cluster_links:0\r\n"
    "mem_aof_buffer:0\r\n"
    "mem_allocator:jemalloc-5.3.0\r\n"
    "active_defrag_running:0\r\n"
    "lazyfree_pending_objects:0\r\n"
    "lazyfreed_objects:0\r\n"
    "\r\n"
    "# Persistence\r\n"
    "loading:0\r\n"
    "async_loading:0\r\n"
    "current_cow_peak:331776\r\n"
    "current_cow_size:331776\r\n"
    "current_cow_size_age:1\r\n"
    "current_fork_perc:0.05\r\n"
    "current_save_keys_processed:1\r\n"
    "current_save_keys_total:2007\r\n"
    "rdb_changes_since_last_save:2056\r\n"
    "rdb_bgsave_in_progress:1\r\n"
    "rdb_last_save_time:1795879613\r\n"
    "rdb_last_bgsave_status:ok\r\n"
    "rdb_last_bgsave_time_sec:0\r\n"
    "rdb_current_bgsave_time_sec:2\r\n"
    "rdb_saves:0\r\n"
    "rdb_last_cow_size:344064\r\n"
    "rdb_last_load_keys_expired:0\r\n"
    "rdb_last_load_keys_loaded:0\r\n"
    "aof_enabled:0\r\n"
    "aof_rewrite_in_progress:0\r\n"
    "aof_rewrite_scheduled:0\r\n"
    "aof_last_rewrite_time_sec:-1\r\n"
    "aof_current_rewrite_time_sec:-1\r\n"
    "aof_last_bgrewrite_status:ok\r\n"
    "aof_rewrites:0\r\n"
    "aof_rewrites_consecutive_failures:0\r\n"
    "aof_last_write_status:ok\r\n"
    "aof_last_cow_size:0\r\n"
    "module_fork_in_progress:0\r\n"
    "module_fork_last_cow_size:0\r\n"
    "\r\n"
    "# Stats\r\n"
    "total_connections_received:65\r\n"
    "total_commands_processed:123\r\n"
    "instantaneous_ops_per_sec:1\r\n"
    "total_net_input_bytes:40314\r\n"
    "total_net_output_bytes:259191\r\n"
    "total_net_repl_input_bytes:0\r\n"
    "total_net_repl_output_bytes:75302\r\n"
    "instantaneous_input_kbps:0.05\r\n"
    "instantaneous_output_kbps:0.02\r\n"
    "instantaneous_input_repl_kbps:0.00\r\n"
    "instantaneous_output_repl_kbps:0.02\r\n"
    "rejected_connections:0\r\n"
    "sync_full:3\r\n"
    "sync_partial_ok:0\r\n"
    "sync_partial_err:0\r\n"
    "expired_keys:0\r\n"
    "expired_stale_perc:0.00\r\n"
    "expired_time_cap_reached_count:0\r\n"
    "expire_cycle_cpu_milliseconds:0\r\n"
    "evicted_keys:0\r\n"
    "evicted_clients:0\r\n"
    "total_eviction_exceeded_time:0\r\n"
    "current_eviction_exceeded_time:0\r\n"
    "keyspace_hits:0\r\n"
    "keyspace_misses:0\r\n"
    "pubsub_channels:0\r\n"
    "pubsub_patterns:0\r\n"
    "pubsubshard_channels:0\r\n"
    "latest_fork_usec:287\r\n"
    "total_forks:2\r\n"
    "migrate_cached_sockets:0\r\n"
    "slave_expires_tracked_keys:0\r\n"
    "active_defrag_hits:0\r\n"
    "active_defrag_misses:0\r\n"
    "active_defrag_key_hits:0\r\n"
    "active_defrag_key_misses:0\r\n"
    "total_active_defrag_time:0\r\n"
    "current_active_defrag_time:0\r\n"
    "tracking_total_keys:0\r\n"
    "tracking_total_items:0\r\n"
    "tracking_total_prefixes:0\r\n"
    "unexpected_error_replies:0\r\n"
    "total_error_replies:0\r\n"
    "dump_payload_sanitizations:0\r\n"
    "total_reads_processed:185\r\n"
    "total_writes_processed:140\r\n"
    "io_threaded_reads_processed:0\r\n"
    "io_threaded_writes_processed:0\r\n"
    "reply_buffer_shrinks:3\r\n"
    "reply_buffer_expands:0\r\n"
    "\r\n"
    "# Replication\r\n"
    "role:master\r\n"
    "connected_slaves:3\r\n"
    "slave0:ip=127.0.0.1,port=21380,state=online,offset=38567,lag=0\r\n"
    "slave1:ip=127.0.0.1,port=21381,state=online,offset=38567,lag=0\r\n"
    "slave2:ip=127.0.0.1,port=21383,state=wait_bgsave,offset=0,lag=0\r\n"
    "master_failover_state:no-failover\r\n"
    "master_replid:5ffe4039a01b3ce9202b904e94d48bd2796253f5\r\n"
    "master_replid2:0000000000000000000000000000000000000000\r\n"
    "master_repl_offset:38581\r\n"
    "second_repl_offset:-1\r\n"
    "repl_backlog_active:1\r\n"
    "repl_backlog_size:1048576\r\n"
    "repl_backlog_first_byte_offset:1\r\n"
    "repl_backlog_histlen:38581\r\n"
    "\r\n"
    "# CPU\r\n"
    "used_cpu_sys:0.023363\r\n"
    "used_cpu_user:0.023317\r\n"
    "used_cpu_sys_children:0.002323\r\n"
    "used_cpu_user_children:0.000000\r\n"
    "used_cpu_sys_main_thread:0.023213\r\n"
    "used_cpu_user_main_thread:0.023167\r\n"
    "\r\n"
    "# Modules\r\n"
    "\r\n"
    "# Errorstats\r\n"
    "\r\n"
    "# Cluster\r\n"
    "cluster_enabled:0\r\n"
    "\r\n"
    "# Keyspace\r\n"
    "db0:keys=2007,expires=2,avg_ttl=733848\r\n";

/* A replica with its link up. */
static const char INFO_REPLICA_UP[] = "# Server\r\n"
                                      "redis_version:7.0.15\r\n"
                                      "redis_git_sha1:00000000\r\n"
                                      "redis_git_dirty:0\r\n"
                                      "redis_build_id:ae4d7c971a948f0\r\n"
                                      "redis_mode:standalone\r\n"
                                      "os:Linux 6.18.44-fc-v657 x86_64\r\n"
                                      "arch_bits:64\r\n"
                                      "monotonic_clock:POSIX clock_gettime\r\n"
                                      "multiplexing_api:epoll\r\n"
                                      "atomicvar_api:c11-builtin\r\n"
                                      "gcc_version:12.2.0\r\n"
                                      "process_id:7556\r\n"
                                      "process_supervised:no\r\n"
                                      "run_id:3d8295f0d604e7e90f1cb5dd8f007001bee9b1d6\r\n"
                                      "tcp_port:21380\r\n"
                                      "server_time_usec:1795879629019064\r\n"
                                      "uptime_in_seconds:15\r\n"
                                      "uptime_in_days:0\r\n"
                                      "hz:10\r\n"
                                      "configured_hz:10\r\n"
                                      "lru_clock:717517\r\n"
                                      "executable:/tmp/kdinfo.FqjG/r1/redis-server\r\n"
                                      "config_file:\r\n"
                                      "io_threads_active:0\r\n"
                                      "\r\n"
                                      "# Clients\r\n"
                                      "connected_clients:2\r\n"
                                      "cluster_connections:0\r\n"
                                      "maxclients:10000\r\n"
                                      "client_recent_max_input_buffer:64\r\n"
                                      "client_recent_max_output_buffer:0\r\n"
                                      "blocked_clients:0\r\n"
                                      "tracking_clients:0\r\n"
                                      "clients_in_timeout_table:0\r\n"
                                      "\r\n"
                                      "# Memory\r\n"
                                      "used_memory:1039104\r\n"
                                      "used_memory_human:1014.75K\r\n"
                                      "used_memory_rss:12374016\r\n"
                                      "used_memory_rss_human:11.80M\r\n"
                                      "used_memory_peak:1040152\r\n"
                                      "used_memory_peak_human:1015.77K\r\n"
                                      "used_memory_peak_perc:99.90%\r\n"
                                      "used_memory_overhead:899196\r\n"
                                      "used_memory_startup:876208\r\n"
                                      "used_memory_dataset:139908\r\n"
                                      "used_memory_dataset_perc:85.89%\r\n"
                                      "allocator_allocated:1983712\r\n"
                                      "allocator_active:2150400\r\n"
                                      "allocator_resident:4866048\r\n"
                                      "total_system_memory:25276510208\r\n"
                                      "total_system_memory_human:23.54G\r\n"
                                      "used_memory_lua:32768\r\n"
                                      "used_memory_vm_eval:32768\r\n"
                                      "used_memory_lua_human:32.00K\r\n"
                                      "used_memory_scripts_eval:0\r\n"
                                      "number_of_cached_scripts:0\r\n"
                                      "number_of_functions:0\r\n"
                                      "number_of_libraries:0\r\n"
                                      "used_memory_vm_functions:33792\r\n"
                                      "used_memory_vm_total:66560\r\n"
                                      "used_memory_vm_total_human:65.00K\r\n"
                                      "used_memory_functions:200\r\n"
                                      "used_memory_scripts:200\r\n"
                                      "used_memory_scripts_human:200B\r\n"
                                      "maxmemory:0\r\n"
                                      "maxmemory_human:0B\r\n"
                                      "maxmemory_policy:noeviction\r\n"
                                      "allocator_frag_ratio:1.08\r\n"
                                      "allocator_frag_bytes:166688\r\n"
                                      "allocator_rss_ratio:2.26\r\n"
                                      "allocator_rss_bytes:2715648\r\n"
                                      "rss_overhead_ratio:2.54\r\n"
                                      "rss_overhead_bytes:7507968\r\n"
                                      "mem_fragmentation_ratio:12.38\r\n"
                                      "mem_fragmentation_bytes:11374856\r\n"
                                      "mem_not_counted_for_evict:0\r\n"
                                      "mem_replication_backlog:20508\r\n"
                                      "mem_total_replication_buffers:20504\r\n"
                                      "mem_clients_slaves:0\r\n"
                                      "mem_clients_normal:1856\r\n"
                                      "mem_cluster_links:0\r\n"
                                      "mem_aof_buffer:0\r\n"
                                      "mem_allocator:jemalloc-5.3.0\r\n"
                                      "active_defrag_running:0\r\n"
                                      "lazyfree_pending_objects:0\r\n"
                                      "lazyfreed_objects:0\r\n"
                                      "\r\n"
                                      "# Persistence\r\n"
                                      "loading:0\r\n"
                                      "async_loading:0\r\n"
                                      "current_cow_peak:0\r\n"
                                      "current_cow_size:0\r\n"
                                      "current_cow_size_age:0\r\n"
                                      "current_fork_perc:0.00\r\n"
                                      "current_save_keys_processed:0\r\n"
                                      "current_save_keys_total:0\r\n"
                                      "rdb_changes_since_last_save:1\r\n"
                                      "rdb_bgsave_in_progress:0\r\n"
                                      "rdb_last_save_time:1795879614\r\n"
                                      "rdb_last_bgsave_status:ok\r\n"
                                      "rdb_last_bgsave_time_sec:-1\r\n"
                                      "rdb_current_bgsave_time_sec:-1\r\n"
                                      "rdb_saves:0\r\n"
                                      "rdb_last_cow_size:0\r\n"
                                      "rdb_last_load_keys_expired:0\r\n"
                                      "rdb_last_load_keys_loaded:6\r\n"
                                      "aof_enabled:0\r\n"
                                      "aof_rewrite_in_progress:0\r\n"
                                      "aof_rewrite_scheduled:0\r\n"
                                      "aof_last_rewrite_time_sec:-1\r\n"
                                      "aof_current_rewrite_time_sec:-1\r\n"
                                      "aof_last_bgrewrite_status:ok\r\n"
                                      "aof_rewrites:0\r\n"
                                      "aof_rewrites_consecutive_failures:0\r\n"
                                      "aof_last_write_status:ok\r\n"
                                      "aof_last_cow_size:0\r\n"
                                      "module_fork_in_progress:0\r\n"
                                      "module_fork_last_cow_size:0\r\n"
                                      "\r\n"
                                      "# Stats\r\n"
                                      "total_connections_received:3\r\n"
                                      "total_commands_processed:5\r\n"
                                      "instantaneous_ops_per_sec:1\r\n"
                                      "total_net_input_bytes:437\r\n"
                                      "total_net_output_bytes:6155\r\n"
                                      "total_net_repl_input_bytes:377\r\n"
                                      "total_net_repl_output_bytes:0\r\n"
                                      "instantaneous_input_kbps:0.03\r\n"
                                      "instantaneous_output_kbps:0.02\r\n"
                                      "instantaneous_input_repl_kbps:0.03\r\n"
                                      "instantaneous_output_repl_kbps:0.00\r\n"
                                      "rejected_connections:0\r\n"
                                      "sync_full:0\r\n"
                                      "sync_partial_ok:0\r\n"
                                      "sync_partial_err:0\r\n"
                                      "expired_keys:0\r\n"
                                      "expired_stale_perc:0.00\r\n"
                                      "expired_time_cap_reached_count:0\r\n"
                                      "expire_cycle_cpu_milliseconds:0\r\n"
                                      "evicted_keys:0\r\n"
                                      "evicted_clients:0\r\n"
                                      "total_eviction_exceeded_time:0\r\n"
                                      "current_eviction_exceeded_time:0\r\n"
                                      "keyspace_hits:0\r\n"
                                      "keyspace_misses:0\r\n"
                                      "pubsub_channels:0\r\n"
                                      "pubsub_patterns:0\r\n"
                                      "pubsubshard_channels:0\r\n"
                                      "latest_fork_usec:0\r\n"
                                      "total_forks:0\r\n"
                                      "migrate_cached_sockets:0\r\n"
                                      "slave_expires_tracked_keys:0\r\n"
                                      "active_defrag_hits:0\r\n"
                                      "active_defrag_misses:0\r\n"
                                      "active_defrag_key_hits:0\r\n"
                                      "active_defrag_key_misses:0\r\n"
                                      "total_active_defrag_time:0\r\n"
                                      "current_active_defrag_time:0\r\n"
                                      "tracking_total_keys:0\r\n"
                                      "tracking_total_items:0\r\n"
                                      "tracking_total_prefixes:0\r\n"
                                      "unexpected_error_replies:0\r\n"
                                      "total_error_replies:0\r\n"
                                      "dump_payload_sanitizations:0\r\n"
                                      "total_reads_processed:7\r\n"
                                      "total_writes_processed:12\r\n"
                                      "io_threaded_reads_processed:0\r\n"
                                      "io_threaded_writes_processed:0\r\n"
                                      "reply_buffer_shrinks:1\r\n"
                                      "reply_buffer_expands:0\r\n"
                                      "\r\n"
                                      "# Replication\r\n"
                                      "role:slave\r\n"
                                      "master_host:127.0.0.1\r\n"
                                      "master_port:21379\r\n"
                                      "master_link_status:up\r\n"
                                      "master_last_io_seconds_ago:2\r\n"
                                      "master_sync_in_progress:0\r\n"
                                      "slave_read_repl_offset:1307\r\n"
                                      "slave_repl_offset:1307\r\n"
                                      "slave_priority:100\r\n"
                                      "slave_read_only:1\r\n"
                                      "replica_announced:1\r\n"
                                      "connected_slaves:0\r\n"
                                      "master_failover_state:no-failover\r\n"
                                      "master_replid:5ffe4039a01b3ce9202b904e94d48bd2796253f5\r\n"
                                      "master_replid2:0000000000000000000000000000000000000000\r\n"
                                      "master_repl_offset:1307\r\n"
                                      "second_repl_offset:-1\r\n"
                                      "repl_backlog_active:1\r\n"
                                      "repl_backlog_size:1048576\r\n"
                                      "repl_backlog_first_byte_offset:1244\r\n"
                                      "repl_backlog_histlen:64\r\n"
                                      "\r\n"
                                      "# CPU\r\n"
                                      "used_cpu_sys:0.017656\r\n"
                                      "used_cpu_user:0.010708\r\n"
                                      "used_cpu_sys_children:0.000000\r\n"
                                      "used_cpu_user_children:0.000000\r\n"
                                      "used_cpu_sys_main_thread:0.018801\r\n"
                                      "used_cpu_user_main_thread:0.009416\r\n"
                                      "\r\n"
                                      "# Modules\r\n"
                                      "\r\n"
                                      "# Errorstats\r\n"
                                      "\r\n"
                                      "# Cluster\r\n"
                                      "cluster_enabled:0\r\n"
                                      "\r\n"
                                      "# Keyspace\r\n"
                                      "db0:keys=7,expires=2,avg_ttl=0\r\n";

/* A replica in its first full sync: link down, sync in progress. */
static const char INFO_REPLICA_SYNCING[] =
    "# Server\r\n"
    "redis_version:7.0.15\r\n"
    "redis_git_sha1:00000000\r\n"
    "redis_git_dirty:0\r\n"
    "redis_build_id:ae4d7c971a948f0\r\n"
    "redis_mode:standalone\r\n"
    "os:Linux 6.18.44-fc-v657 x86_64\r\n"
    "arch_bits:64\r\n"
    "monotonic_clock:POSIX clock_gettime\r\n"
    "multiplexing_api:epoll\r\n"
    "atomicvar_api:c11-builtin\r\n"
    "gcc_version:12.2.0\r\n"
    "process_id:7739\r\n"
    "process_supervised:no\r\n"
    "run_id:13096468b1b51fb27bab4c61c470356cbaa75e80\r\n"
    "tcp_port:21383\r\n"
    "server_time_usec:1795879633961081\r\n"
    "uptime_in_seconds:2\r\n"
    "uptime_in_days:0\r\n"
    "hz:10\r\n"
    "configured_hz:10\r\n"
    "lru_clock:717521\r\n"
    "executable:/tmp/kdinfo.FqjG/r4/redis-server\r\n"
    "config_file:\r\n"
    "io_threads_active:0\r\n"
    "\r\n"
    "# Clients\r\n"
    "connected_clients:1\r\n"
    "cluster_connections:0\r\n"
    "maxclients:10000\r\n"
    "client_recent_max_input_buffer:0\r\n"
    "client_recent_max_output_buffer:0\r\n"
    "blocked_clients:0\r\n"
    "tracking_clients:0\r\n"
    "clients_in_timeout_table:0\r\n"
    "\r\n"
    "# Memory\r\n"
    "used_memory:917040\r\n"
    "used_memory_human:895.55K\r\n"
    "used_memory_rss:12238848\r\n"
    "used_memory_rss_human:11.67M\r\n"
    "used_memory_peak:917040\r\n"
    "used_memory_peak_human:895.55K\r\n"
    "used_memory_peak_perc:102.57%\r\n"
    "used_memory_overhead:876376\r\n"
    "used_memory_startup:876176\r\n"
    "used_memory_dataset:40664\r\n"
    "used_memory_dataset_perc:99.51%\r\n"
    "allocator_allocated:1690848\r\n"
    "allocator_active:1826816\r\n"
    "allocator_resident:4497408\r\n"
    "total_system_memory:25276510208\r\n"
    "total_system_memory_human:23.54G\r\n"
    "used_memory_lua:32768\r\n"
    "used_memory_vm_eval:32768\r\n"
    "used_memory_lua_human:32.00K\r\n"
    "used_memory_scripts_eval:0\r\n"
    "number_of_cached_scripts:0\r\n"
    "number_of_functions:0\r\n"
    "number_of_libraries:0\r\n"
    "used_memory_vm_functions:33792\r\n"
    "used_memory_vm_total:66560\r\n"
    "used_memory_vm_total_human:65.00K\r\n"
    "used_memory_functions:200\r\n"
    "used_memory_scripts:200\r\n"
    "used_memory_scripts_human:200B\r\n"
    "maxmemory:0\r\n"
    "maxmemory_human:0B\r\n"
    "maxmemory_policy:noeviction\r\n"
    "allocator_frag_ratio:1.08\r\n"
    "allocator_frag_bytes:135968\r\n"
    "allocator_rss_ratio:2.46\r\n"
    "allocator_rss_bytes:2670592\r\n"
    "rss_overhead_ratio:2.72\r\n"
    "rss_overhead_bytes:7741440\r\n"
    "mem_fragmentation_ratio:13.96\r\n"
    "mem_fragmentation_bytes:11362432\r\n"
    "mem_not_counted_for_evict:0\r\n"
    "mem_replication_backlog:0\r\n"
    "mem_total_replication_buffers:0\r\n"
    "mem_clients_slaves:0\r\n"
    "mem_clients_normal:0\r\n"
    "mem_cluster_links:0\r\n"
    "mem_aof_buffer:0\r\n"
    "mem_allocator:jemalloc-5.3.0\r\n"
    "active_defrag_running:0\r\n"
    "lazyfree_pending_objects:0\r\n"
    "lazyfreed_objects:0\r\n"
    "\r\n"
    "# Persistence\r\n"
    "loading:0\r\n"
    "async_loading:0\r\n"
    "current_cow_peak:0\r\n"
    "current_cow_size:0\r\n"
    "current_cow_size_age:0\r\n"
    "current_fork_perc:0.00\r\n"
    "current_save_keys_processed:0\r\n"
    "current_save_keys_total:0\r\n"
    "rdb_changes_since_last_save:0\r\n"
    "rdb_bgsave_in_progress:0\r\n"
    "rdb_last_save_time:1795879631\r\n"
    "rdb_last_bgsave_status:ok\r\n"
    "rdb_last_bgsave_time_sec:-1\r\n"
    "rdb_current_bgsave_time_sec:-1\r\n"
    "rdb_saves:0\r\n"
    "rdb_last_cow_size:0\r\n"
    "rdb_last_load_keys_expired:0\r\n"
    "rdb_last_load_keys_loaded:0\r\n"
    "aof_enabled:0\r\n"
    "aof_rewrite_in_progress:0\r\n"
    "aof_rewrite_scheduled:0\r\n"
    "aof_last_rewrite_time_sec:-1\r\n"
    "aof_current_rewrite_time_sec:-1\r\n"
    "aof_last_bgrewrite_status:ok\r\n"
    "aof_rewrites:0\r\n"
    "aof_rewrites_consecutive_failures:0\r\n"
    "aof_last_write_status:ok\r\n"
    "aof_last_cow_size:0\r\n"
    "module_fork_in_progress:0\r\n"
    "module_fork_last_cow_size:0\r\n"
    "\r\n"
    "# Stats\r\n"
    "total_connections_received:1\r\n"
    "total_commands_processed:0\r\n"
    "instantaneous_ops_per_sec:0\r\n"
    "total_net_input_bytes:14\r\n"
    "total_net_output_bytes:0\r\n"
    "total_net_repl_input_bytes:0\r\n"
    "total_net_repl_output_bytes:0\r\n"
    "instantaneous_input_kbps:0.00\r\n"
    "instantaneous_output_kbps:0.00\r\n"
    "instantaneous_input_repl_kbps:0.00\r\n"
    "instantaneous_output_repl_kbps:0.00\r\n"
    "rejected_connections:0\r\n"
    "sync_full:0\r\n"
    "sync_partial_ok:0\r\n"
    "sync_partial_err:0\r\n"
    "expired_keys:0\r\n"
    "expired_stale_perc:0.00\r\n"
    "expired_time_cap_reached_count:0\r\n"
    "expire_cycle_cpu_milliseconds:0\r\n"
    "evicted_keys:0\r\n"
    "evicted_clients:0\r\n"
    "total_eviction_exceeded_time:0\r\n"
    "current_eviction_exceeded_time:0\r\n"
    "keyspace_hits:0\r\n"
    "keyspace_misses:0\r\n"
    "pubsub_channels:0\r\n"
    "pubsub_patterns:0\r\n"
    "pubsubshard_channels:0\r\n"
    "latest_fork_usec:0\r\n"
    "total_forks:0\r\n"
    "migrate_cached_sockets:0\r\n"
    "slave_expires_tracked_keys:0\r\n"
    "active_defrag_hits:0\r\n"
    "active_defrag_misses:0\r\n"
    "active_defrag_key_hits:0\r\n"
    "active_defrag_key_misses:0\r\n"
    "total_active_defrag_time:0\r\n"
    "current_active_defrag_time:0\r\n"
    "tracking_total_keys:0\r\n"
    "tracking_total_items:0\r\n"
    "tracking_total_prefixes:0\r\n"
    "unexpected_error_replies:0\r\n"
    "total_error_replies:0\r\n"
    "dump_payload_sanitizations:0\r\n"
    "total_reads_processed:1\r\n"
    "total_writes_processed:0\r\n"
    "io_threaded_reads_processed:0\r\n"
    "io_threaded_writes_processed:0\r\n"
    "reply_buffer_shrinks:0\r\n"
    "reply_buffer_expands:0\r\n"
    "\r\n"
    "# Replication\r\n"
    "role:slave\r\n"
    "master_host:127.0.0.1\r\n"
    "master_port:21379\r\n"
    "master_link_status:down\r\n"
    "master_last_io_seconds_ago:-1\r\n"
    "master_sync_in_progress:1\r\n"
    "slave_read_repl_offset:1\r\n"
    "slave_repl_offset:1\r\n"
    "master_sync_total_bytes:-1\r\n"
    "master_sync_read_bytes:0\r\n"
    "master_sync_left_bytes:-1\r\n"
    "master_sync_perc:-0.00\r\n"
    "master_sync_last_io_seconds_ago:2\r\n"
    "master_link_down_since_seconds:-1\r\n"
    "slave_priority:100\r\n"
    "slave_read_only:1\r\n"
    "replica_announced:1\r\n"
    "connected_slaves:0\r\n"
    "master_failover_state:no-failover\r\n"
    "master_replid:598ca6cb77b5915b7b87188626654ee648a43994\r\n"
    "master_replid2:0000000000000000000000000000000000000000\r\n"
    "master_repl_offset:0\r\n"
    "second_repl_offset:-1\r\n"
    "repl_backlog_active:0\r\n"
    "repl_backlog_size:1048576\r\n"
    "repl_backlog_first_byte_offset:0\r\n"
    "repl_backlog_histlen:0\r\n"
    "\r\n"
    "# CPU\r\n"
    "used_cpu_sys:0.008519\r\n"
    "used_cpu_user:0.001341\r\n"
    "used_cpu_sys_children:0.000000\r\n"
    "used_cpu_user_children:0.000000\r\n"
    "used_cpu_sys_main_thread:0.004838\r\n"
    "used_cpu_user_main_thread:0.004838\r\n"
    "\r\n"
    "# Modules\r\n"
    "\r\n"
    "# Errorstats\r\n"
    "\r\n"
    "# Cluster\r\n"
    "cluster_enabled:0\r\n"
    "\r\n"
    "# Keyspace\r\n";

/* A replica whose primary was killed (SIGKILL) three seconds earlier. */
static const char INFO_REPLICA_LINK_LOST[] =
    "# Server\r\n"
    "redis_version:7.0.15\r\n"
    "redis_git_sha1:00000000\r\n"
    "redis_git_dirty:0\r\n"
    "redis_build_id:ae4d7c971a948f0\r\n"
    "redis_mode:standalone\r\n"
    "os:Linux 6.18.44-fc-v657 x86_64\r\n"
    "arch_bits:64\r\n"
    "monotonic_clock:POSIX clock_gettime\r\n"
    "multiplexing_api:epoll\r\n"
    "atomicvar_api:c11-builtin\r\n"
    "gcc_version:12.2.0\r\n"
    "process_id:7809\r\n"
    "process_supervised:no\r\n"
    "run_id:515e3583319aa78866e0405945493a687bb8ee0a\r\n"
    "tcp_port:21385\r\n"
    "server_time_usec:1795879663869007\r\n"
    "uptime_in_seconds:18\r\n"
    "uptime_in_days:0\r\n"
    "hz:10\r\n"
    "configured_hz:10\r\n"
    "lru_clock:717551\r\n"
    "executable:/tmp/kdinfo.FqjG/r5/redis-server\r\n"
    "config_file:\r\n"
    "io_threads_active:0\r\n"
    "\r\n"
    "# Clients\r\n"
    "connected_clients:1\r\n"
    "cluster_connections:0\r\n"
    "maxclients:10000\r\n"
    "client_recent_max_input_buffer:32\r\n"
    "client_recent_max_output_buffer:0\r\n"
    "blocked_clients:0\r\n"
    "tracking_clients:0\r\n"
    "clients_in_timeout_table:0\r\n"
    "\r\n"
    "# Memory\r\n"
    "used_memory:1079576\r\n"
    "used_memory_human:1.03M\r\n"
    "used_memory_rss:12652544\r\n"
    "used_memory_rss_human:12.07M\r\n"
    "used_memory_peak:1079576\r\n"
    "used_memory_peak_human:1.03M\r\n"
    "used_memory_peak_perc:102.11%\r\n"
    "used_memory_overhead:898900\r\n"
    "used_memory_startup:876296\r\n"
    "used_memory_dataset:180676\r\n"
    "used_memory_dataset_perc:88.88%\r\n"
    "allocator_allocated:2078240\r\n"
    "allocator_active:2256896\r\n"
    "allocator_resident:5025792\r\n"
    "total_system_memory:25276510208\r\n"
    "total_system_memory_human:23.54G\r\n"
    "used_memory_lua:32768\r\n"
    "used_memory_vm_eval:32768\r\n"
    "used_memory_lua_human:32.00K\r\n"
    "used_memory_scripts_eval:0\r\n"
    "number_of_cached_scripts:0\r\n"
    "number_of_functions:0\r\n"
    "number_of_libraries:0\r\n"
    "used_memory_vm_functions:33792\r\n"
    "used_memory_vm_total:66560\r\n"
    "used_memory_vm_total_human:65.00K\r\n"
    "used_memory_functions:200\r\n"
    "used_memory_scripts:200\r\n"
    "used_memory_scripts_human:200B\r\n"
    "maxmemory:0\r\n"
    "maxmemory_human:0B\r\n"
    "maxmemory_policy:noeviction\r\n"
    "allocator_frag_ratio:1.09\r\n"
    "allocator_frag_bytes:178656\r\n"
    "allocator_rss_ratio:2.23\r\n"
    "allocator_rss_bytes:2768896\r\n"
    "rss_overhead_ratio:2.52\r\n"
    "rss_overhead_bytes:7626752\r\n"
    "mem_fragmentation_ratio:12.17\r\n"
    "mem_fragmentation_bytes:11612880\r\n"
    "mem_not_counted_for_evict:0\r\n"
    "mem_replication_backlog:20508\r\n"
    "mem_total_replication_buffers:20504\r\n"
    "mem_clients_slaves:0\r\n"
    "mem_clients_normal:1824\r\n"
    "mem_cluster_links:0\r\n"
    "mem_aof_buffer:0\r\n"
    "mem_allocator:jemalloc-5.3.0\r\n"
    "active_defrag_running:0\r\n"
    "lazyfree_pending_objects:0\r\n"
    "lazyfreed_objects:0\r\n"
    "\r\n"
    "# Persistence\r\n"
    "loading:0\r\n"
    "async_loading:0\r\n"
    "current_cow_peak:0\r\n"
    "current_cow_size:0\r\n"
    "current_cow_size_age:0\r\n"
    "current_fork_perc:0.00\r\n"
    "current_save_keys_processed:0\r\n"
    "current_save_keys_total:0\r\n"
    "rdb_changes_since_last_save:2\r\n"
    "rdb_bgsave_in_progress:0\r\n"
    "rdb_last_save_time:1795879645\r\n"
    "rdb_last_bgsave_status:ok\r\n"
    "rdb_last_bgsave_time_sec:-1\r\n"
    "rdb_current_bgsave_time_sec:-1\r\n"
    "rdb_saves:0\r\n"
    "rdb_last_cow_size:0\r\n"
    "rdb_last_load_keys_expired:0\r\n"
    "rdb_last_load_keys_loaded:0\r\n"
    "aof_enabled:0\r\n"
    "aof_rewrite_in_progress:0\r\n"
    "aof_rewrite_scheduled:0\r\n"
    "aof_last_rewrite_time_sec:-1\r\n"
    "aof_current_rewrite_time_sec:-1\r\n"
    "aof_last_bgrewrite_status:ok\r\n"
    "aof_rewrites:0\r\n"
    "aof_rewrites_consecutive_failures:0\r\n"
    "aof_last_write_status:ok\r\n"
    "aof_last_cow_size:0\r\n"
    "module_fork_in_progress:0\r\n"
    "module_fork_last_cow_size:0\r\n"
    "\r\n"
    "# Stats\r\n"
    "total_connections_received:4\r\n"
    "total_commands_processed:6\r\n"
    "instantaneous_ops_per_sec:0\r\n"
    "total_net_input_bytes:415\r\n"
    "total_net_output_bytes:6777\r\n"
    "total_net_repl_input_bytes:323\r\n"
    "total_net_repl_output_bytes:0\r\n"
    "instantaneous_input_kbps:0.00\r\n"
    "instantaneous_output_kbps:0.00\r\n"
    "instantaneous_input_repl_kbps:0.00\r\n"
    "instantaneous_output_repl_kbps:0.00\r\n"
    "rejected_connections:0\r\n"
    "sync_full:0\r\n"
    "sync_partial_ok:0\r\n"
    "sync_partial_err:0\r\n"
    "expired_keys:0\r\n"
    "expired_stale_perc:0.00\r\n"
    "expired_time_cap_reached_count:0\r\n"
    "expire_cycle_cpu_milliseconds:0\r\n"
    "evicted_keys:0\r\n"
    "evicted_clients:0\r\n"
    "total_eviction_exceeded_time:0\r\n"
    "current_eviction_exceeded_time:0\r\n"
    "keyspace_hits:0\r\n"
    "keyspace_misses:0\r\n"
    "pubsub_channels:0\r\n"
    "pubsub_patterns:0\r\n"
    "pubsubshard_channels:0\r\n"
    "latest_fork_usec:0\r\n"
    "total_forks:0\r\n"
    "migrate_cached_sockets:0\r\n"
    "slave_expires_tracked_keys:0\r\n"
    "active_defrag_hits:0\r\n"
    "active_defrag_misses:0\r\n"
    "active_defrag_key_hits:0\r\n"
    "active_defrag_key_misses:0\r\n"
    "total_active_defrag_time:0\r\n"
    "current_active_defrag_time:0\r\n"
    "tracking_total_keys:0\r\n"
    "tracking_total_items:0\r\n"
    "tracking_total_prefixes:0\r\n"
    "unexpected_error_replies:0\r\n"
    "total_error_replies:0\r\n"
    "dump_payload_sanitizations:0\r\n"
    "total_reads_processed:10\r\n"
    "total_writes_processed:15\r\n"
    "io_threaded_reads_processed:0\r\n"
    "io_threaded_writes_processed:0\r\n"
    "reply_buffer_shrinks:1\r\n"
    "reply_buffer_expands:0\r\n"
    "\r\n"
    "# Replication\r\n"
    "role:slave\r\n"
    "master_host:127.0.0.1\r\n"
    "master_port:21384\r\n"
    "master_link_status:down\r\n"
    "master_last_io_seconds_ago:-1\r\n"
    "master_sync_in_progress:0\r\n"
    "slave_read_repl_offset:64\r\n"
    "slave_repl_offset:64\r\n"
    "master_link_down_since_seconds:3\r\n"
    "slave_priority:100\r\n"
    "slave_read_only:1\r\n"
    "replica_announced:1\r\n"
    "connected_slaves:0\r\n"
    "master_failover_state:no-failover\r\n"
    "master_replid:8386baa6a29cdbf2c1139a1863a60867240f2651\r\n"
    "master_replid2:0000000000000000000000000000000000000000\r\n"
    "master_repl_offset:64\r\n"
    "second_repl_offset:-1\r\n"
    "repl_backlog_active:1\r\n"
    "repl_backlog_size:1048576\r\n"
    "repl_backlog_first_byte_offset:1\r\n"
    "repl_backlog_histlen:64\r\n"
    "\r\n"
    "# CPU\r\n"
    "used_cpu_sys:0.018679\r\n"
    "used_cpu_user:0.018781\r\n"
    "used_cpu_sys_children:0.000000\r\n"
    "used_cpu_user_children:0.000000\r\n"
    "used_cpu_sys_main_thread:0.011594\r\n"
    "used_cpu_user_main_thread:0.025348\r\n"
    "\r\n"
    "# Modules\r\n"
    "\r\n"
    "# Errorstats\r\n"
    "\r\n"
    "# Cluster\r\n"
    "cluster_enabled:0\r\n"
    "\r\n"
    "# Keyspace\r\n"
    "db0:keys=1,expires=0,avg_ttl=0\r\n";

/* A replica of a port where nothing listens: never connected. */
static const char INFO_REPLICA_NEVER_UP[] =
    "# Server\r\n"
    "redis_version:7.0.15\r\n"
    "redis_git_sha1:00000000\r\n"
    "redis_git_dirty:0\r\n"
    "redis_build_id:ae4d7c971a948f0\r\n"
    "redis_mode:standalone\r\n"
    "os:Linux 6.18.44-fc-v657 x86_64\r\n"
    "arch_bits:64\r\n"
    "monotonic_clock:POSIX clock_gettime\r\n"
    "multiplexing_api:epoll\r\n"
    "atomicvar_api:c11-builtin\r\n"
    "gcc_version:12.2.0\r\n"
    "process_id:7562\r\n"
    "process_supervised:no\r\n"
    "run_id:5982446e50499bc2f95b8b20085306b1ba57b8a0\r\n"
    "tcp_port:21382\r\n"
    "server_time_usec:1795879629025420\r\n"
    "uptime_in_seconds:15\r\n"
    "uptime_in_days:0\r\n"
    "hz:10\r\n"
    "configured_hz:10\r\n"
    "lru_clock:717517\r\n"
    "executable:/tmp/kdinfo.FqjG/r3/redis-server\r\n"
    "config_file:\r\n"
    "io_threads_active:0\r\n"
    "\r\n"
    "# Clients\r\n"
    "connected_clients:1\r\n"
    "cluster_connections:0\r\n"
    "maxclients:10000\r\n"
    "client_recent_max_input_buffer:0\r\n"
    "client_recent_max_output_buffer:0\r\n"
    "blocked_clients:0\r\n"
    "tracking_clients:0\r\n"
    "clients_in_timeout_table:0\r\n"
    "\r\n"
    "# Memory\r\n"
    "used_memory:941536\r\n"
    "used_memory_human:919.47K\r\n"
    "used_memory_rss:12431360\r\n"
    "used_memory_rss_human:11.86M\r\n"
    "used_memory_peak:941536\r\n"
    "used_memory_peak_human:919.47K\r\n"
    "used_memory_peak_perc:100.18%\r\n"
    "used_memory_overhead:876280\r\n"
    "used_memory_startup:876080\r\n"
    "used_memory_dataset:65256\r\n"
    "used_memory_dataset_perc:99.69%\r\n"
    "allocator_allocated:1909984\r\n"
    "allocator_active:2064384\r\n"
    "allocator_resident:4734976\r\n"
    "total_system_memory:25276510208\r\n"
    "total_system_memory_human:23.54G\r\n"
    "used_memory_lua:32768\r\n"
    "used_memory_vm_eval:32768\r\n"
    "used_memory_lua_human:32.00K\r\n"
    "used_memory_scripts_eval:0\r\n"
    "number_of_cached_scripts:0\r\n"
    "number_of_functions:0\r\n"
    "number_of_libraries:0\r\n"
    "used_memory_vm_functions:33792\r\n"
    "used_memory_vm_total:66560\r\n"
    "used_memory_vm_total_human:65.00K\r\n"
    "used_memory_functions:200\r\n"
    "used_memory_scripts:200\r\n"
    "used_memory_scripts_human:200B\r\n"
    "maxmemory:0\r\n"
    "maxmemory_human:0B\r\n"
    "maxmemory_policy:noeviction\r\n"
    "allocator_frag_ratio:1.08\r\n"
    "allocator_frag_bytes:154400\r\n"
    "allocator_rss_ratio:2.29\r\n"
    "allocator_rss_bytes:2670592\r\n"
    "rss_overhead_ratio:2.63\r\n"
    "rss_overhead_bytes:7696384\r\n"
    "mem_fragmentation_ratio:13.79\r\n"
    "mem_fragmentation_bytes:11529736\r\n"
    "mem_not_counted_for_evict:0\r\n"
    "mem_replication_backlog:0\r\n"
    "mem_total_replication_buffers:0\r\n"
    "mem_clients_slaves:0\r\n"
    "mem_clients_normal:0\r\n"
    "mem_cluster_links:0\r\n"
    "mem_aof_buffer:0\r\n"
    "mem_allocator:jemalloc-5.3.0\r\n"
    "active_defrag_running:0\r\n"
    "lazyfree_pending_objects:0\r\n"
    "lazyfreed_objects:0\r\n"
    "\r\n"
    "# Persistence\r\n"
    "loading:0\r\n"
    "async_loading:0\r\n"
    "current_cow_peak:0\r\n"
    "current_cow_size:0\r\n"
    "current_cow_size_age:0\r\n"
    "current_fork_perc:0.00\r\n"
    "current_save_keys_processed:0\r\n"
    "current_save_keys_total:0\r\n"
    "rdb_changes_since_last_save:0\r\n"
    "rdb_bgsave_in_progress:0\r\n"
    "rdb_last_save_time:1795879614\r\n"
    "rdb_last_bgsave_status:ok\r\n"
    "rdb_last_bgsave_time_sec:-1\r\n"
    "rdb_current_bgsave_time_sec:-1\r\n"
    "rdb_saves:0\r\n"
    "rdb_last_cow_size:0\r\n"
    "rdb_last_load_keys_expired:0\r\n"
    "rdb_last_load_keys_loaded:0\r\n"
    "aof_enabled:0\r\n"
    "aof_rewrite_in_progress:0\r\n"
    "aof_rewrite_scheduled:0\r\n"
    "aof_last_rewrite_time_sec:-1\r\n"
    "aof_current_rewrite_time_sec:-1\r\n"
    "aof_last_bgrewrite_status:ok\r\n"
    "aof_rewrites:0\r\n"
    "aof_rewrites_consecutive_failures:0\r\n"
    "aof_last_write_status:ok\r\n"
    "aof_last_cow_size:0\r\n"
    "module_fork_in_progress:0\r\n"
    "module_fork_last_cow_size:0\r\n"
    "\r\n"
    "# Stats\r\n"
    "total_connections_received:3\r\n"
    "total_commands_processed:2\r\n"
    "instantaneous_ops_per_sec:0\r\n"
    "total_net_input_bytes:60\r\n"
    "total_net_output_bytes:5785\r\n"
    "total_net_repl_input_bytes:0\r\n"
    "total_net_repl_output_bytes:0\r\n"
    "instantaneous_input_kbps:0.00\r\n"
    "instantaneous_output_kbps:0.00\r\n"
    "instantaneous_input_repl_kbps:0.00\r\n"
    "instantaneous_output_repl_kbps:0.00\r\n"
    "rejected_connections:0\r\n"
    "sync_full:0\r\n"
    "sync_partial_ok:0\r\n"
    "sync_partial_err:0\r\n"
    "expired_keys:0\r\n"
    "expired_stale_perc:0.00\r\n"
    "expired_time_cap_reached_count:0\r\n"
    "expire_cycle_cpu_milliseconds:0\r\n"
    "evicted_keys:0\r\n"
    "evicted_clients:0\r\n"
    "total_eviction_exceeded_time:0\r\n"
    "current_eviction_exceeded_time:0\r\n"
    "keyspace_hits:0\r\n"
    "keyspace_misses:0\r\n"
    "pubsub_channels:0\r\n"
    "pubsub_patterns:0\r\n"
    "pubsubshard_channels:0\r\n"
    "latest_fork_usec:0\r\n"
    "total_forks:0\r\n"
    "migrate_cached_sockets:0\r\n"
    "slave_expires_tracked_keys:0\r\n"
    "active_defrag_hits:0\r\n"
    "active_defrag_misses:0\r\n"
    "active_defrag_key_hits:0\r\n"
    "active_defrag_key_misses:0\r\n"
    "total_active_defrag_time:0\r\n"
    "current_active_defrag_time:0\r\n"
    "tracking_total_keys:0\r\n"
    "tracking_total_items:0\r\n"
    "tracking_total_prefixes:0\r\n"
    "unexpected_error_replies:0\r\n"
    "total_error_replies:0\r\n"
    "dump_payload_sanitizations:0\r\n"
    "total_reads_processed:5\r\n"
    "total_writes_processed:2\r\n"
    "io_threaded_reads_processed:0\r\n"
    "io_threaded_writes_processed:0\r\n"
    "reply_buffer_shrinks:0\r\n"
    "reply_buffer_expands:0\r\n"
    "\r\n"
    "# Replication\r\n"
    "role:slave\r\n"
    "master_host:127.0.0.1\r\n"
    "master_port:21399\r\n"
    "master_link_status:down\r\n"
    "master_last_io_seconds_ago:-1\r\n"
    "master_sync_in_progress:0\r\n"
    "slave_read_repl_offset:1\r\n"
    "slave_repl_offset:1\r\n"
    "master_link_down_since_seconds:-1\r\n"
    "slave_priority:100\r\n"
    "slave_read_only:1\r\n"
    "replica_announced:1\r\n"
    "connected_slaves:0\r\n"
    "master_failover_state:no-failover\r\n"
    "master_replid:1f307fc86cfe852c70be407d11612c464e355564\r\n"
    "master_replid2:0000000000000000000000000000000000000000\r\n"
    "master_repl_offset:0\r\n"
    "second_repl_offset:-1\r\n"
    "repl_backlog_active:0\r\n"
    "repl_backlog_size:1048576\r\n"
    "repl_backlog_first_byte_offset:0\r\n"
    "repl_backlog_histlen:0\r\n"
    "\r\n"
    "# CPU\r\n"
    "used_cpu_sys:0.010544\r\n"
    "used_cpu_user:0.016049\r\n"
    "used_cpu_sys_children:0.000000\r\n"
    "used_cpu_user_children:0.000000\r\n"
    "used_cpu_sys_main_thread:0.008813\r\n"
    "used_cpu_user_main_thread:0.017622\r\n"
    "\r\n"
    "# Modules\r\n"
    "\r\n"
    "# Errorstats\r\n"
    "\r\n"
    "# Cluster\r\n"
    "cluster_enabled:0\r\n"
    "\r\n"
    "# Keyspace\r\n";

#define LEN(s) (sizeof(s) - 1)

/*
 * Copies s into a heap block of exactly n bytes (no NUL after it), so that
 * AddressSanitizer catches any read past the length given to the parser.
 */
static char *exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    if (p && n)
        memcpy(p, s, n);
    return p;
}

/* Parses the first n bytes of s from an exact-size heap copy. */
static int parse_n(const char *s, size_t n, struct info_repl *r)
{
    char *p = exact(s, n);
    int rc = info_parse(p, n, r);
    free(p);
    return rc;
}

/* Field-by-field equality of two parse results (the structs have padding). */
static int same_repl(const struct info_repl *a, const struct info_repl *b)
{
    if (strcmp(a->role, b->role) || strcmp(a->run_id, b->run_id) ||
        strcmp(a->master_replid, b->master_replid) || strcmp(a->master_host, b->master_host))
        return 0;
    if (a->master_repl_offset != b->master_repl_offset ||
        a->slave_repl_offset != b->slave_repl_offset ||
        a->slave_read_repl_offset != b->slave_read_repl_offset ||
        a->master_link_up != b->master_link_up ||
        a->master_last_io_seconds_ago != b->master_last_io_seconds_ago ||
        a->master_sync_in_progress != b->master_sync_in_progress ||
        a->master_port != b->master_port || a->connected_slaves != b->connected_slaves ||
        a->nslaves != b->nslaves || a->sync_full != b->sync_full ||
        a->uptime_in_seconds != b->uptime_in_seconds || a->db0_keys != b->db0_keys)
        return 0;
    for (int i = 0; i < a->nslaves; i++) {
        const struct info_slave *x = &a->slaves[i], *y = &b->slaves[i];
        if (strcmp(x->ip, y->ip) || strcmp(x->state, y->state) || x->port != y->port ||
            x->offset != y->offset || x->lag != y->lag)
            return 0;
    }
    return 1;
}

/* Checks that every replica-side field still holds its "absent" default. */
static void check_no_replica_fields(const struct info_repl *r)
{
    CHECK(r->slave_repl_offset == -1);
    CHECK(r->slave_read_repl_offset == -1);
    CHECK(r->master_link_up == -1);
    CHECK(r->master_last_io_seconds_ago == -1);
    CHECK(r->master_sync_in_progress == -1);
    CHECK_STR(r->master_host, "");
    CHECK(r->master_port == -1);
}

TEST(info_defaults)
{
    struct info_repl r;
    info_repl_init(&r);
    CHECK_STR(r.role, "");
    CHECK_STR(r.run_id, "");
    CHECK_STR(r.master_replid, "");
    CHECK(r.master_repl_offset == -1);
    check_no_replica_fields(&r);
    CHECK(r.connected_slaves == -1);
    CHECK(r.nslaves == 0);
    CHECK(r.sync_full == -1);
    CHECK(r.uptime_in_seconds == -1);
    CHECK(r.db0_keys == -1);
}

TEST(info_master_with_two_slaves)
{
    struct info_repl r;
    CHECK(parse_n(INFO_MASTER_2_SLAVES, LEN(INFO_MASTER_2_SLAVES), &r) == 0);
    CHECK_STR(r.role, "master");
    CHECK_STR(r.run_id, "c5757a150503afac1f3432221965e3d923037494");
    CHECK_STR(r.master_replid, "5ffe4039a01b3ce9202b904e94d48bd2796253f5");
    CHECK(r.master_repl_offset == 1307);
    CHECK(r.connected_slaves == 2);
    CHECK(r.nslaves == 2);
    CHECK_STR(r.slaves[0].ip, "127.0.0.1");
    CHECK(r.slaves[0].port == 21380);
    CHECK_STR(r.slaves[0].state, "online");
    CHECK(r.slaves[0].offset == 1307);
    CHECK(r.slaves[0].lag == 1);
    CHECK_STR(r.slaves[1].ip, "127.0.0.1");
    CHECK(r.slaves[1].port == 21381);
    CHECK_STR(r.slaves[1].state, "online");
    CHECK(r.slaves[1].offset == 1307);
    CHECK(r.slaves[1].lag == 1);
    CHECK(r.sync_full == 2);
    CHECK(r.uptime_in_seconds == 16);
    CHECK(r.db0_keys == 7);
    /* "slave_read_only", "slave_expires_tracked_keys" etc. are not slaveN lines */
    check_no_replica_fields(&r);
}

TEST(info_master_with_slave_waiting_for_bgsave)
{
    struct info_repl r;
    CHECK(parse_n(INFO_MASTER_SLAVE_SYNCING, LEN(INFO_MASTER_SLAVE_SYNCING), &r) == 0);
    CHECK_STR(r.role, "master");
    CHECK(r.master_repl_offset == 38581);
    CHECK(r.connected_slaves == 3);
    CHECK(r.nslaves == 3);
    CHECK(r.slaves[0].offset == 38567 && r.slaves[1].offset == 38567);
    CHECK(r.slaves[2].port == 21383);
    CHECK_STR(r.slaves[2].state, "wait_bgsave");
    CHECK(r.slaves[2].offset == 0);
    CHECK(r.slaves[2].lag == 0);
    CHECK(r.sync_full == 3);
    CHECK(r.db0_keys == 2007);
}

TEST(info_replica_link_up)
{
    struct info_repl r;
    CHECK(parse_n(INFO_REPLICA_UP, LEN(INFO_REPLICA_UP), &r) == 0);
    CHECK_STR(r.role, "slave");
    CHECK_STR(r.master_host, "127.0.0.1");
    CHECK(r.master_port == 21379);
    CHECK(r.master_link_up == 1);
    CHECK(r.master_last_io_seconds_ago == 2);
    CHECK(r.master_sync_in_progress == 0);
    CHECK(r.slave_repl_offset == 1307);
    CHECK(r.slave_read_repl_offset == 1307);
    CHECK(r.master_repl_offset == 1307);
    /* a replica in sync shares its primary's replication id */
    CHECK_STR(r.master_replid, "5ffe4039a01b3ce9202b904e94d48bd2796253f5");
    CHECK(r.connected_slaves == 0);
    CHECK(r.nslaves == 0);
    CHECK(r.sync_full == 0);
    CHECK(r.db0_keys == 7);
}

TEST(info_replica_sync_in_progress)
{
    struct info_repl r;
    CHECK(parse_n(INFO_REPLICA_SYNCING, LEN(INFO_REPLICA_SYNCING), &r) == 0);
    CHECK_STR(r.role, "slave");
    CHECK(r.master_link_up == 0);
    CHECK(r.master_sync_in_progress == 1);
    CHECK(r.master_last_io_seconds_ago == -1);
    CHECK(r.slave_repl_offset == 1);
    CHECK(r.master_repl_offset == 0);
    CHECK(r.uptime_in_seconds == 2);
    CHECK(r.db0_keys == -1); /* empty keyspace: no db0 line */
}

TEST(info_replica_link_lost)
{
    struct info_repl r;
    CHECK(parse_n(INFO_REPLICA_LINK_LOST, LEN(INFO_REPLICA_LINK_LOST), &r) == 0);
    CHECK(r.master_link_up == 0);
    CHECK(r.master_sync_in_progress == 0);
    CHECK(r.master_port == 21384);
    CHECK(r.slave_repl_offset == 64);
    CHECK(r.slave_read_repl_offset == 64);
    CHECK(r.db0_keys == 1);
}

TEST(info_replica_never_connected)
{
    struct info_repl r;
    CHECK(parse_n(INFO_REPLICA_NEVER_UP, LEN(INFO_REPLICA_NEVER_UP), &r) == 0);
    CHECK(r.master_link_up == 0);
    CHECK(r.master_port == 21399);
    CHECK(r.master_last_io_seconds_ago == -1);
    CHECK_STR(r.master_replid, "1f307fc86cfe852c70be407d11612c464e355564");
    CHECK(r.db0_keys == -1);
}

/* The captured text with every "\r\n" turned into "\n" parses the same. */
TEST(info_lf_same_as_crlf)
{
    const char *all[] = {INFO_MASTER_2_SLAVES, INFO_MASTER_SLAVE_SYNCING, INFO_REPLICA_UP,
                         INFO_REPLICA_SYNCING, INFO_REPLICA_LINK_LOST,    INFO_REPLICA_NEVER_UP};
    for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
        size_t n = strlen(all[k]), o = 0;
        char *lf = malloc(n);
        struct info_repl a, b;
        for (size_t i = 0; i < n; i++)
            if (all[k][i] != '\r')
                lf[o++] = all[k][i];
        CHECK(o < n);
        CHECK(parse_n(all[k], n, &a) == 0);
        CHECK(parse_n(lf, o, &b) == 0);
        CHECK(same_repl(&a, &b));
        free(lf);
    }
}

TEST(info_missing_fields_keep_defaults)
{
    struct info_repl r;
    const char t[] = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n";
    CHECK(parse_n(t, LEN(t), &r) == 0);
    CHECK_STR(r.role, "master");
    CHECK(r.connected_slaves == 0);
    CHECK(r.nslaves == 0);
    CHECK(r.master_repl_offset == -1);
    CHECK_STR(r.master_replid, "");
    CHECK_STR(r.run_id, "");
    CHECK(r.sync_full == -1);
    CHECK(r.uptime_in_seconds == -1);
    CHECK(r.db0_keys == -1);
    check_no_replica_fields(&r);

    /* INFO replication alone: no server, stats or keyspace sections */
    const char *repl = strstr(INFO_REPLICA_UP, "# Replication");
    CHECK(repl != NULL);
    const char *end = strstr(repl, "\r\n\r\n");
    CHECK(end != NULL);
    CHECK(parse_n(repl, (size_t)(end - repl) + 2, &r) == 0);
    CHECK(r.slave_repl_offset == 1307);
    CHECK(r.master_link_up == 1);
    CHECK_STR(r.run_id, "");
    CHECK(r.uptime_in_seconds == -1);
    CHECK(r.sync_full == -1);
    CHECK(r.db0_keys == -1);
}

TEST(info_empty)
{
    struct info_repl r;
    char out[8] = "x";
    CHECK(info_parse(NULL, 0, &r) == -1);
    CHECK(info_parse("", 0, &r) == -1);
    CHECK(parse_n("", 0, &r) == -1);
    CHECK(parse_n("\r\n\r\n\n", 5, &r) == -1);
    CHECK(parse_n("# Replication\r\n", 15, &r) == -1);
    CHECK(r.master_repl_offset == -1 && r.nslaves == 0);
    CHECK(info_field(NULL, 0, "role", out, sizeof(out)) == 0);
    CHECK(info_field("", 0, "role", out, sizeof(out)) == 0);
    CHECK_STR(out, "x"); /* untouched when absent */
}

TEST(info_garbage)
{
    struct info_repl r;
    const char bin[] = "\x00\xff\xfe:\x01\r\r\n\n\x80role\x00:master\n::::\n=,=,\n#role:master\n";
    CHECK(parse_n(bin, LEN(bin), &r) == -1);
    CHECK_STR(r.role, "");

    /* known keys whose values do not parse keep their defaults and do not count */
    const char bad[] = "master_repl_offset:12abc\r\n"
                       "slave_repl_offset:\r\n"
                       "master_port:99999999999\r\n"
                       "connected_slaves:-\r\n"
                       "uptime_in_seconds: 5\r\n"
                       "sync_full:0x10\r\n"
                       "master_repl_offset:9223372036854775808\r\n"
                       "master_link_status:sideways\r\n"
                       "db0:expires=3\r\n"
                       "slave0:bogus\r\n"
                       "slave1:ip\r\n"
                       "slaveX:ip=1.2.3.4\r\n";
    CHECK(parse_n(bad, LEN(bad), &r) == -1);
    CHECK(r.master_repl_offset == -1);
    CHECK(r.slave_repl_offset == -1);
    CHECK(r.master_port == -1);
    CHECK(r.connected_slaves == -1);
    CHECK(r.uptime_in_seconds == -1);
    CHECK(r.sync_full == -1);
    CHECK(r.master_link_up == -1);
    CHECK(r.db0_keys == -1);
    CHECK(r.nslaves == 0);

    /* the extremes that do fit */
    const char edge[] = "master_repl_offset:9223372036854775807\n"
                        "slave_repl_offset:-9223372036854775808\n"
                        "master_port:-2147483648\n"
                        "connected_slaves:2147483648\n";
    CHECK(parse_n(edge, LEN(edge), &r) == 0);
    CHECK(r.master_repl_offset == LLONG_MAX);
    CHECK(r.slave_repl_offset == LLONG_MIN);
    CHECK(r.master_port == INT_MIN);
    CHECK(r.connected_slaves == -1);
}

/* Every prefix of a real reply parses within its bounds, to a consistent result. */
TEST(info_truncated_at_every_length)
{
    const char *t = INFO_MASTER_2_SLAVES;
    size_t n = LEN(INFO_MASTER_2_SLAVES);
    const char *off = strstr(t, "master_repl_offset:1307\r\n");
    size_t full_from = (size_t)(off - t) + strlen("master_repl_offset:1307\r\n");
    size_t first = (size_t)(strstr(t, "run_id:") - t) + strlen("run_id:");
    struct info_repl whole, r;

    CHECK(parse_n(t, n, &whole) == 0);
    for (size_t cut = 0; cut <= n; cut++) {
        char *p = exact(t, cut);
        char v[32];
        int rc = info_parse(p, cut, &r);
        int f = info_field(p, cut, "master_repl_offset", v, sizeof(v));
        free(p);
        CHECK(rc == (cut >= first ? 0 : -1)); /* run_id is the first known field */
        CHECK(r.nslaves >= 0 && r.nslaves <= 2);
        if (cut >= full_from) {
            CHECK(r.master_repl_offset == 1307);
            CHECK(f == 1 && !strcmp(v, "1307"));
        } else {
            /* a line cut in the middle is taken as it stands: a prefix of the value */
            CHECK(r.master_repl_offset == -1 || r.master_repl_offset == 1 ||
                  r.master_repl_offset == 13 || r.master_repl_offset == 130 ||
                  r.master_repl_offset == 1307);
        }
    }
    CHECK(same_repl(&whole, &r));

    /* cut inside a slave line: the pairs that made it are kept */
    const char *s1 = strstr(t, "slave1:ip=127.0.0.1,port=2138");
    CHECK(parse_n(t, (size_t)(s1 - t) + strlen("slave1:ip=127.0.0.1,port=2138"), &r) == 0);
    CHECK(r.nslaves == 2);
    CHECK(r.slaves[1].port == 2138);
    CHECK_STR(r.slaves[1].state, "");
    CHECK(r.slaves[1].offset == -1);
}

TEST(info_field_at_end_without_newline)
{
    struct info_repl r;
    char v[16];
    const char t[] = "role:slave\r\nmaster_link_status:up";
    CHECK(parse_n(t, LEN(t), &r) == 0);
    CHECK_STR(r.role, "slave");
    CHECK(r.master_link_up == 1);
    CHECK(info_field(t, LEN(t), "master_link_status", v, sizeof(v)) == 1);
    CHECK_STR(v, "up");
    /* a lone CR at the very end is a line ending too */
    const char u[] = "slave_repl_offset:42\r";
    CHECK(parse_n(u, LEN(u), &r) == 0);
    CHECK(r.slave_repl_offset == 42);
    const char w[] = "db0:keys=5";
    CHECK(parse_n(w, LEN(w), &r) == 0);
    CHECK(r.db0_keys == 5);
}

TEST(info_absurdly_long_lines)
{
    size_t big = 200000;
    char *t = malloc(big + 256);
    struct info_repl r;
    size_t n = 0;

    /* a huge run_id, a huge line with no colon, a huge slave ip, then normal fields */
    n += (size_t)sprintf(t + n, "run_id:");
    memset(t + n, 'a', big / 4);
    n += big / 4;
    n += (size_t)sprintf(t + n, "\r\n");
    memset(t + n, 'z', big / 4);
    n += big / 4;
    n += (size_t)sprintf(t + n, "\r\nslave0:ip=");
    memset(t + n, '9', big / 4);
    n += big / 4;
    n += (size_t)sprintf(t + n, ",port=7000,state=online\r\nmaster_replid:");
    memset(t + n, 'f', big / 8);
    n += big / 8;
    n += (size_t)sprintf(t + n, "\r\nmaster_repl_offset:0000000000000000000000000012\r\n");
    CHECK(parse_n(t, n, &r) == 0);
    CHECK(strlen(r.run_id) == sizeof(r.run_id) - 1);
    CHECK(r.run_id[0] == 'a');
    CHECK(strlen(r.master_replid) == sizeof(r.master_replid) - 1);
    CHECK(r.nslaves == 1);
    CHECK(strlen(r.slaves[0].ip) == sizeof(r.slaves[0].ip) - 1);
    CHECK(r.slaves[0].port == 7000);
    CHECK_STR(r.slaves[0].state, "online");
    CHECK(r.master_repl_offset == 12);

    /* a number with more digits than any long long */
    n = (size_t)sprintf(t, "master_repl_offset:");
    memset(t + n, '7', 1000);
    n += 1000;
    CHECK(parse_n(t, n, &r) == -1);
    CHECK(r.master_repl_offset == -1);
    free(t);
}

TEST(info_slave_lines)
{
    struct info_repl r;
    const char t[] = "slave0:ip=::1,port=6380,state=online,offset=10,lag=0\n"
                     "slave1:state=send_bulk,ip=10.0.0.2,port=6381,offset=,lag=x,extra=1\n"
                     "slave_read_only:1\n"
                     "slave2:ip=10.0.0.3,port=6382,state=a-state-name-much-longer-than-24\n";
    CHECK(parse_n(t, LEN(t), &r) == 0);
    CHECK(r.nslaves == 3);
    CHECK_STR(r.slaves[0].ip, "::1");
    CHECK(r.slaves[0].port == 6380);
    CHECK_STR(r.slaves[1].ip, "10.0.0.2");
    CHECK_STR(r.slaves[1].state, "send_bulk");
    CHECK(r.slaves[1].offset == -1);
    CHECK(r.slaves[1].lag == -1);
    CHECK(strlen(r.slaves[2].state) == sizeof(r.slaves[2].state) - 1);

    /* more slave lines than fit: the first INFO_MAX_SLAVES are kept */
    char buf[INFO_MAX_SLAVES * 2 * 64];
    size_t n = 0;
    for (int i = 0; i < INFO_MAX_SLAVES * 2; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "slave%d:ip=h,port=%d\r\n", i, 1000 + i);
    CHECK(parse_n(buf, n, &r) == 0);
    CHECK(r.nslaves == INFO_MAX_SLAVES);
    CHECK(r.slaves[INFO_MAX_SLAVES - 1].port == 1000 + INFO_MAX_SLAVES - 1);
}

TEST(info_last_value_wins_and_reparse_resets)
{
    struct info_repl r;
    const char t[] = "role:master\nrole:slave\nmaster_port:1\n";
    CHECK(parse_n(t, LEN(t), &r) == 0);
    CHECK_STR(r.role, "slave");
    /* parsing again starts from the defaults, not from the previous result */
    CHECK(parse_n("uptime_in_seconds:3\n", 20, &r) == 0);
    CHECK_STR(r.role, "");
    CHECK(r.master_port == -1);
    CHECK(r.uptime_in_seconds == 3);
}

TEST(info_field_lookup)
{
    const char *t = INFO_REPLICA_UP;
    size_t n = LEN(INFO_REPLICA_UP);
    char v[64];
    char small[5] = "zzzz";

    CHECK(info_field(t, n, "master_link_status", v, sizeof(v)) == 1);
    CHECK_STR(v, "up");
    CHECK(info_field(t, n, "redis_version", v, sizeof(v)) == 1);
    CHECK_STR(v, "7.0.15");
    CHECK(info_field(t, n, "config_file", v, sizeof(v)) == 1); /* present, empty */
    CHECK_STR(v, "");
    CHECK(info_field(t, n, "master", v, sizeof(v)) == 0); /* no prefix matches */
    CHECK(info_field(t, n, "master_link_status_x", v, sizeof(v)) == 0);
    CHECK(info_field(t, n, "Replication", v, sizeof(v)) == 0); /* headers are not fields */
    /* the value is cut to fit, NUL-terminated */
    CHECK(info_field(t, n, "master_replid", small, sizeof(small)) == 1);
    CHECK_STR(small, "5ffe");
    CHECK(info_field(t, n, "master_replid", small, 1) == 1);
    CHECK_STR(small, "");
    small[0] = 'q';
    CHECK(info_field(t, n, "master_replid", small, 0) == 1);
    CHECK(small[0] == 'q');
    /* a value holding colons: only the first colon splits */
    const char e[] = "errorstat_ERR:count=1\r\nexecutable:/a:b\r\n";
    CHECK(info_field(e, LEN(e), "executable", v, sizeof(v)) == 1);
    CHECK_STR(v, "/a:b");
    /* the first occurrence wins */
    const char d[] = "k:1\nk:2\n";
    CHECK(info_field(d, LEN(d), "k", v, sizeof(v)) == 1);
    CHECK_STR(v, "1");
}
