/*
 * cmds -- the subcommands' entry points. Each takes argv[0] = its own name
 * and returns the process exit status.
 */
#ifndef KD_CMDS_H
#define KD_CMDS_H

int cmd_run(int argc, char **argv);     /* agent.c */
int cmd_check(int argc, char **argv);   /* check.c */
int cmd_sync(int argc, char **argv);    /* sync.c */
int cmd_repair(int argc, char **argv);  /* client.c */
int cmd_status(int argc, char **argv);  /* client.c */
int cmd_history(int argc, char **argv); /* history.c */
int cmd_demo(int argc, char **argv);    /* demo.c */

#endif
