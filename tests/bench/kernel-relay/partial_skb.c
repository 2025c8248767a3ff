/*
 * Does a socket that joins a sockmap relay again the bytes recv() already
 * took from a half-read skb? (Experiment, like exp.c: not in house style.)
 *
 *     gcc -O2 -Wall -Wno-unused-function -o partial_skb partial_skb.c
 *     unshare -n sh -c 'ip link set lo up; ./partial_skb'
 *
 * The client sends "HDR\nhello world" in one write (one skb); the relay
 * side reads the 4 header bytes with recv(), then joins a sockhash whose
 * verdict redirects everything to the backend's socket. Linux 6.18.44:
 *
 *     header read 'HDR'; backend got 15 bytes: 'HDR\nhello world'
 *
 * tcp_read_skb() (net/ipv4/tcp.c), which feeds the SK_SKB verdict since
 * Linux 6.0, takes whole skbs off the receive queue and never looks at
 * copied_seq, unlike tcp_recvmsg() and tcp_read_sock(), which start at
 * copied_seq - TCP_SKB_CB(skb)->seq inside the first skb.
 */
#define _GNU_SOURCE
#include "bpfrelay.h"
#include <arpa/inet.h>
#include <stdlib.h>
static int lst(struct sockaddr_in *sa){int s=socket(AF_INET,SOCK_STREAM,0);sa->sin_family=AF_INET;sa->sin_addr.s_addr=htonl(0x7f000001);sa->sin_port=0;bind(s,(void*)sa,sizeof*sa);listen(s,8);socklen_t l=sizeof*sa;getsockname(s,(void*)sa,&l);return s;}
static int cto(struct sockaddr_in *sa){int s=socket(AF_INET,SOCK_STREAM,0);if(connect(s,(void*)sa,sizeof*sa)){perror("connect");exit(1);}return s;}
int main(void){
	int m=sockhash_create(16); int pf=verdict_load_z(m,1,1,0); if(pf<0||prog_attach(pf,m,BPF_SK_SKB_VERDICT))return 1;
	struct sockaddr_in ra,ba;int rl=lst(&ra),bl=lst(&ba);
	int C=cto(&ra),A=accept(rl,0,0),B=cto(&ba),S=accept(bl,0,0);
	send(C,"HDR\nhello world",15,0); usleep(100000);
	char h[5]={0}; recv(A,h,4,0);
	if(pair_insert(m,A,B,0,1)){perror("insert");return 1;}
	usleep(100000);
	char b[100]={0}; ssize_t r=recv(S,b,sizeof b-1,MSG_DONTWAIT);
	printf("header read '%.3s'; backend got %zd bytes: '%s'\n",h,r,b);
	return r==11?0:1;}
